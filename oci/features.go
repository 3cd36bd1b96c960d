package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// Features is what an OCI runtime says it can do (`runtime features`, the
// runtime-spec's features.md), reduced to what peapod asks.
type Features struct {
	// UserNamespaces: the runtime creates and joins user namespaces
	// ("user" in linux.namespaces) and makes idmapped mounts
	// (linux.mountExtensions.idmap.enabled), which a pod with its own
	// user namespace needs for its volumes and files (runc >= 1.2).
	UserNamespaces bool
	// Why says, when UserNamespaces is false, what the runtime lacks.
	Why string
}

// features is the part of the runtime-spec features document peapod reads.
type features struct {
	Linux *struct {
		Namespaces      []string `json:"namespaces"`
		MountExtensions *struct {
			IDMap *struct {
				Enabled *bool `json:"enabled"`
			} `json:"idmap"`
		} `json:"mountExtensions"`
	} `json:"linux"`
}

// ParseFeatures reads a `runtime features` document.
func ParseFeatures(data []byte) (Features, error) {
	var f features
	if err := json.Unmarshal(data, &f); err != nil {
		return Features{}, fmt.Errorf("parse features: %w", err)
	}
	switch {
	case f.Linux == nil:
		return Features{Why: "reports no linux features"}, nil
	case !slices.Contains(f.Linux.Namespaces, "user"):
		return Features{Why: "reports no user namespace support"}, nil
	case f.Linux.MountExtensions == nil || f.Linux.MountExtensions.IDMap == nil ||
		f.Linux.MountExtensions.IDMap.Enabled == nil || !*f.Linux.MountExtensions.IDMap.Enabled:
		return Features{Why: "reports no idmapped mounts (mountExtensions.idmap)"}, nil
	}
	return Features{UserNamespaces: true}, nil
}

// Features asks the runtime binary (`runtime features`) once and caches the
// answer for the life of the Runtime, as Check does: the binary does not
// change under a running peapod. A runtime without the subcommand (runc <
// 1.1, crun < 1.5) supports none of them; a call cut short by ctx is not
// cached.
func (r *Runtime) Features(ctx context.Context) Features {
	r.featuresMu.Lock()
	defer r.featuresMu.Unlock()
	if r.features != nil {
		return *r.features
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, r.path, "features").Output()
	if ctx.Err() != nil {
		return Features{Why: "`features` interrupted: " + ctx.Err().Error()}
	}
	var f Features
	if err != nil {
		msg := err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		f = Features{Why: "`" + r.path + " features` failed: " + msg}
	} else if f, err = ParseFeatures(out); err != nil {
		f = Features{Why: r.path + " features: " + err.Error()}
	} else if !f.UserNamespaces {
		f.Why = r.path + " " + f.Why
	}
	r.features = &f
	klog.InfoS("OCI runtime features", "runtime", r.name, "path", r.path, "userNamespaces", f.UserNamespaces, "why", f.Why)
	return f
}
