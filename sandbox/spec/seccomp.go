package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// seccompProfile picks the seccomp profile from a security context.
//
// The `seccomp` field wins; without it the deprecated `seccomp_profile_path`
// is read ("runtime/default", "docker/default", "unconfined",
// "localhost/<path>"). Neither set means unconfined (containerd's default
// with an empty unset_seccomp_profile; the kubelet always sends the field).
// Privileged containers run unconfined, whatever is asked.
//
// Localhost profiles are read from the host path in localhost_ref, which must
// be absolute and, when profileRoot is set, resolve (symlinks followed) to a
// regular file inside profileRoot.
func seccompProfile(prof *runtimeapi.SecurityProfile, legacyPath string, privileged bool,
	caps *specs.LinuxCapabilities, profileRoot, fieldPrefix string) (*specs.LinuxSeccomp, error) {
	if privileged {
		return nil, nil
	}
	field := fieldPrefix + "seccomp"
	if prof == nil && legacyPath != "" {
		field = fieldPrefix + "seccomp_profile_path"
		switch {
		case legacyPath == "runtime/default" || legacyPath == "docker/default":
			prof = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		case legacyPath == "unconfined":
			prof = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
		case strings.HasPrefix(legacyPath, "localhost/"):
			prof = &runtimeapi.SecurityProfile{
				ProfileType:  runtimeapi.SecurityProfile_Localhost,
				LocalhostRef: strings.TrimPrefix(legacyPath, "localhost/"),
			}
		default:
			return nil, fieldErr(field, "invalid profile %q: want runtime/default, docker/default, unconfined or localhost/<path>", legacyPath)
		}
	}
	if prof == nil {
		return nil, nil
	}
	if prof.GetProfileType() != runtimeapi.SecurityProfile_Localhost && prof.GetLocalhostRef() != "" {
		return nil, fieldErr(field+".localhost_ref", "must only be set when profile_type is Localhost")
	}
	switch prof.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		return DefaultSeccomp(caps), nil
	case runtimeapi.SecurityProfile_Localhost:
		ref := strings.TrimPrefix(prof.GetLocalhostRef(), "localhost/")
		s, err := LoadSeccompProfile(ref, profileRoot, caps)
		if err != nil {
			return nil, &FieldError{Field: field + ".localhost_ref", Err: err}
		}
		return s, nil
	default:
		return nil, fieldErr(field+".profile_type", "unknown profile type %d", prof.GetProfileType())
	}
}

// dockerSeccomp is the seccomp profile file format of Docker, containerd and
// the kubelet's Localhost profiles; a plain OCI LinuxSeccomp document parses
// too (it is a subset).
type dockerSeccomp struct {
	DefaultAction    specs.LinuxSeccompAction `json:"defaultAction"`
	DefaultErrnoRet  *uint                    `json:"defaultErrnoRet,omitempty"`
	Architectures    []specs.Arch             `json:"architectures,omitempty"`
	ArchMap          []dockerArchMap          `json:"archMap,omitempty"`
	ListenerPath     string                   `json:"listenerPath,omitempty"`
	ListenerMetadata string                   `json:"listenerMetadata,omitempty"`
	Flags            []specs.LinuxSeccompFlag `json:"flags,omitempty"`
	Syscalls         []dockerSyscall          `json:"syscalls,omitempty"`
}

type dockerArchMap struct {
	Arch      specs.Arch   `json:"architecture"`
	SubArches []specs.Arch `json:"subArchitectures"`
}

type dockerFilter struct {
	Caps      []string `json:"caps,omitempty"`
	Arches    []string `json:"arches,omitempty"`
	MinKernel string   `json:"minKernel,omitempty"`
}

type dockerSyscall struct {
	Name     string                   `json:"name,omitempty"`
	Names    []string                 `json:"names,omitempty"`
	Action   specs.LinuxSeccompAction `json:"action"`
	ErrnoRet *uint                    `json:"errnoRet,omitempty"`
	Args     []specs.LinuxSeccompArg  `json:"args,omitempty"`
	Includes *dockerFilter            `json:"includes,omitempty"`
	Excludes *dockerFilter            `json:"excludes,omitempty"`
}

var nativeSeccompArch = map[string]specs.Arch{
	"amd64": specs.ArchX86_64, "386": specs.ArchX86, "arm64": specs.ArchAARCH64,
	"arm": specs.ArchARM, "s390x": specs.ArchS390X, "ppc64le": specs.ArchPPC64LE,
	"riscv64": specs.ArchRISCV64,
}

// LoadSeccompProfile reads a Localhost seccomp profile (Docker/containerd
// JSON format, or plain OCI) from path and converts it to the OCI form for a
// process with caps: archMap entries of the native architecture are
// expanded, syscall rules whose includes/excludes (caps, arches) do not match
// are dropped. minKernel conditions are treated as met (peapod targets
// kernels far newer than any profile's minKernel).
func LoadSeccompProfile(path, profileRoot string, caps *specs.LinuxCapabilities) (*specs.LinuxSeccomp, error) {
	if path == "" {
		return nil, errors.New("Localhost seccomp profile needs a path")
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("seccomp profile path %q is not absolute", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile %q: %w", path, err)
	}
	if profileRoot != "" {
		root, err := filepath.EvalSymlinks(profileRoot)
		if err != nil {
			return nil, fmt.Errorf("seccomp profile root %q: %w", profileRoot, err)
		}
		if rel, err := filepath.Rel(root, real); err != nil || rel == ".." || strings.HasPrefix(rel, "../") || rel == "." {
			return nil, fmt.Errorf("seccomp profile %q (resolved to %q) is outside the profile root %q", path, real, profileRoot)
		}
	}
	st, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile %q: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("seccomp profile %q is not a regular file", path)
	}
	b, err := os.ReadFile(real)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile %q: %w", path, err)
	}
	var d dockerSeccomp
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("seccomp profile %q: decode: %w", path, err)
	}
	if d.DefaultAction == "" {
		return nil, fmt.Errorf("seccomp profile %q: no defaultAction", path)
	}
	return d.toOCI(caps), nil
}

func (d *dockerSeccomp) toOCI(caps *specs.LinuxCapabilities) *specs.LinuxSeccomp {
	out := &specs.LinuxSeccomp{
		DefaultAction:    d.DefaultAction,
		DefaultErrnoRet:  d.DefaultErrnoRet,
		Architectures:    slices.Clone(d.Architectures),
		ListenerPath:     d.ListenerPath,
		ListenerMetadata: d.ListenerMetadata,
		Flags:            d.Flags,
	}
	native := nativeSeccompArch[runtime.GOARCH]
	for _, m := range d.ArchMap {
		if m.Arch == native {
			out.Architectures = append(out.Architectures, m.Arch)
			out.Architectures = append(out.Architectures, m.SubArches...)
		}
	}
	var bounding []string
	if caps != nil {
		bounding = caps.Bounding
	}
	hasAll := func(want []string) bool {
		for _, c := range want {
			if !slices.Contains(bounding, c) {
				return false
			}
		}
		return true
	}
	for _, sc := range d.Syscalls {
		if f := sc.Includes; f != nil {
			if len(f.Arches) > 0 && !slices.Contains(f.Arches, runtime.GOARCH) {
				continue
			}
			if len(f.Caps) > 0 && !hasAll(f.Caps) {
				continue
			}
		}
		if f := sc.Excludes; f != nil {
			if len(f.Arches) > 0 && slices.Contains(f.Arches, runtime.GOARCH) {
				continue
			}
			if len(f.Caps) > 0 && slices.ContainsFunc(f.Caps, func(c string) bool { return slices.Contains(bounding, c) }) {
				continue
			}
		}
		names := slices.Clone(sc.Names)
		if sc.Name != "" {
			names = append(names, sc.Name)
		}
		out.Syscalls = append(out.Syscalls, specs.LinuxSyscall{
			Names:    names,
			Action:   sc.Action,
			ErrnoRet: sc.ErrnoRet,
			Args:     sc.Args,
		})
	}
	return out
}
