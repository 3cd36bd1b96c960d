package volumes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

// FlexVolume: the kubelet's exec protocol for out-of-tree volume drivers.
// A driver "vendor/name" lives at <PluginDir>/vendor~name/name and is called
// as `<driver> <op> <args...>`, printing one JSON object:
//
//	init                                  → {"status":"Success","capabilities":{"attach":true}}
//	attach <json options> <node>          → {"status":"Success","device":"/dev/sdx"}
//	waitforattach <device> <json options> → {"status":"Success","device":"/dev/sdx"}
//	mountdevice <global dir> <device> <json options>
//	mount <pod volume dir> <json options>
//	unmount <pod volume dir>
//	unmountdevice <global dir>
//	detach <volume name> <node>
//
// Any op may answer {"status":"Not supported"}; then peapod does what the
// kubelet's defaults do (see flexMounter): attach/waitforattach keep the
// device path, mountdevice formats (if empty) and mounts the device,
// mount bind-mounts the global mount, unmount/unmountdevice unmount, detach
// does nothing.

const (
	flexStatusSuccess      = "Success"
	flexStatusFailure      = "Failure"
	flexStatusNotSupported = "Not supported"

	// Option keys the kubelet adds to a driver's JSON options.
	optFSType        = "kubernetes.io/fsType"
	optReadWrite     = "kubernetes.io/readwrite"
	optPodName       = "kubernetes.io/pod.name"
	optPodNamespace  = "kubernetes.io/pod.namespace"
	optPodUID        = "kubernetes.io/pod.uid"
	optServiceAcct   = "kubernetes.io/serviceAccount.name"
	optPVOrVolName   = "kubernetes.io/pvOrVolumeName"
	optSecretPrefix  = "kubernetes.io/secret/"
	optFSGroup       = "kubernetes.io/mounterArgs.FsGroup" // mount only, when the pod has an fsGroup
	loopDriverName   = "peapod/loop"
	loopImageOption  = "image"
	flexCallTimeout  = 2 * time.Minute
	flexPluginPrefix = "flexvolume-"
)

var errFlexNotSupported = errors.New("flexvolume: not supported")

type flexCapabilities struct {
	Attach         bool `json:"attach"`
	SELinuxRelabel bool `json:"selinuxRelabel"`
	// FSGroup: peapod applies the pod's fsGroup to the mounted volume
	// (ownership.go); a driver that does it itself, or whose filesystem
	// has no Unix groups, answers false.
	FSGroup bool `json:"fsGroup"`
}

// defaultFlexCapabilities are the kubelet's (driver-call.go): what a driver
// does not say, in init's answer or by not supporting init, is true.
func defaultFlexCapabilities() flexCapabilities {
	return flexCapabilities{Attach: true, SELinuxRelabel: true, FSGroup: true}
}

// flexResult is a driver's answer.
type flexResult struct {
	Status       string            `json:"status"`
	Message      string            `json:"message,omitempty"`
	Device       string            `json:"device,omitempty"`
	VolumeName   string            `json:"volumeName,omitempty"`
	Attached     bool              `json:"attached,omitempty"`
	Capabilities *flexCapabilities `json:"capabilities,omitempty"`
}

// parseFlexResult turns a driver's output into a result, errFlexNotSupported
// or an error carrying the driver's message. A driver that exits non-zero but
// prints a valid answer is judged by the answer, as the kubelet does.
func parseFlexResult(op string, out []byte, runErr error) (*flexResult, error) {
	// Capabilities a driver leaves out keep the kubelet's defaults: it
	// decodes the answer over them.
	parse := func(b []byte) (flexResult, error) {
		caps := defaultFlexCapabilities()
		r := flexResult{Capabilities: &caps}
		err := json.Unmarshal(b, &r)
		return r, err
	}
	trimmed := bytes.TrimSpace(out)
	// Drivers sometimes log before the JSON; take the last line that parses.
	r, perr := parse(trimmed)
	if perr != nil {
		lines := bytes.Split(trimmed, []byte("\n"))
		for i := len(lines) - 1; i >= 0; i-- {
			if lr, err := parse(bytes.TrimSpace(lines[i])); err == nil {
				r, perr = lr, nil
				break
			}
		}
	}
	if perr != nil {
		if runErr != nil {
			return nil, fmt.Errorf("flexvolume %s: %v, output: %q", op, runErr, trimmed)
		}
		return nil, fmt.Errorf("flexvolume %s: unparsable output %q: %v", op, trimmed, perr)
	}
	switch r.Status {
	case flexStatusSuccess:
		return &r, nil
	case flexStatusNotSupported:
		return &r, errFlexNotSupported
	case flexStatusFailure:
		return &r, fmt.Errorf("flexvolume %s failed: %s", op, r.Message)
	default:
		return &r, fmt.Errorf("flexvolume %s: unknown status %q (%s)", op, r.Status, r.Message)
	}
}

// flexDriver speaks the protocol; the exec driver and the built-in
// peapod/loop driver both implement it, so the fall-backs are shared.
type flexDriver interface {
	name() string
	call(ctx context.Context, op string, args ...string) (*flexResult, error)
}

type execFlexDriver struct {
	driver string
	path   string
}

func (d *execFlexDriver) name() string { return d.driver }

func (d *execFlexDriver) call(ctx context.Context, op string, args ...string) (*flexResult, error) {
	ctx, cancel := context.WithTimeout(ctx, flexCallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.path, append([]string{op}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r, perr := parseFlexResult(op, stdout.Bytes(), err)
	if perr != nil && !errors.Is(perr, errFlexNotSupported) && stderr.Len() > 0 {
		perr = fmt.Errorf("%w (stderr: %s)", perr, strings.TrimSpace(stderr.String()))
	}
	klog.V(4).InfoS("flexvolume call", "driver", d.driver, "op", op, "args", args, "status", statusOf(r), "err", perr)
	return r, perr
}

func statusOf(r *flexResult) string {
	if r == nil {
		return ""
	}
	return r.Status
}

// flexDriverDir is the kubelet's directory name for a driver: vendor~name.
func flexDriverDir(driver string) string { return strings.ReplaceAll(driver, "/", "~") }

// flexRegistry finds drivers in PluginDir and remembers their init answers.
type flexRegistry struct {
	pluginDir string
	builtin   map[string]flexDriver

	mu    sync.Mutex
	cache map[string]flexEntry // by driver name
}

type flexEntry struct {
	drv     flexDriver
	caps    flexCapabilities
	modTime time.Time
}

func (r *flexRegistry) get(ctx context.Context, driver string) (flexDriver, flexCapabilities, error) {
	if d, ok := r.builtin[driver]; ok {
		return d, loopCapabilities, nil
	}
	dir := flexDriverDir(driver)
	exe := driver
	if i := strings.LastIndex(driver, "/"); i >= 0 {
		exe = driver[i+1:]
	}
	if r.pluginDir == "" {
		return nil, flexCapabilities{}, fmt.Errorf("flexvolume driver %q: no plugin dir configured", driver)
	}
	path := filepath.Join(r.pluginDir, dir, exe)
	st, err := os.Stat(path)
	if err != nil {
		return nil, flexCapabilities{}, fmt.Errorf("flexvolume driver %q not found: %w", driver, err)
	}
	r.mu.Lock()
	e, ok := r.cache[driver]
	r.mu.Unlock()
	if ok && e.modTime.Equal(st.ModTime()) {
		return e.drv, e.caps, nil
	}
	d := &execFlexDriver{driver: driver, path: path}
	res, err := d.call(ctx, "init")
	caps := defaultFlexCapabilities()
	switch {
	case errors.Is(err, errFlexNotSupported):
	case err != nil:
		return nil, caps, fmt.Errorf("flexvolume driver %q init: %w", driver, err)
	case res.Capabilities != nil:
		caps = *res.Capabilities
	}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]flexEntry{}
	}
	r.cache[driver] = flexEntry{drv: d, caps: caps, modTime: st.ModTime()}
	r.mu.Unlock()
	return d, caps, nil
}

// flexOptionsJSON renders the options a driver gets: the spec's options, the
// kubelet's well-known keys, and the secret's values base64-encoded.
func flexOptionsJSON(opts map[string]string, extra map[string]string) string {
	m := make(map[string]string, len(opts)+len(extra))
	for k, v := range opts {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// loopDriver is peapod/loop, built in: options {image: /path/disk.img}. It
// implements attach, mountdevice and detach itself and answers "Not
// supported" for the rest, so the pod mount is the default bind mount of the
// global mount point.
type loopDriver struct{}

// loopCapabilities: the loop device is attached, and its filesystem (ext4
// by default) takes the pod's fsGroup.
var loopCapabilities = flexCapabilities{Attach: true, FSGroup: true}

func (loopDriver) name() string { return loopDriverName }

func (loopDriver) call(ctx context.Context, op string, args ...string) (*flexResult, error) {
	fail := func(err error) (*flexResult, error) {
		return &flexResult{Status: flexStatusFailure, Message: err.Error()}, fmt.Errorf("peapod/loop %s: %w", op, err)
	}
	opts := func(s string) (map[string]string, error) {
		var m map[string]string
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("bad options: %w", err)
		}
		if m[loopImageOption] == "" {
			return nil, fmt.Errorf("option %q is required", loopImageOption)
		}
		if !filepath.IsAbs(m[loopImageOption]) {
			return nil, fmt.Errorf("option %q must be an absolute path", loopImageOption)
		}
		return m, nil
	}
	switch op {
	case "init":
		caps := loopCapabilities
		return &flexResult{Status: flexStatusSuccess, Capabilities: &caps}, nil
	case "attach": // <json> <node>
		if len(args) < 1 {
			return fail(errors.New("missing options"))
		}
		m, err := opts(args[0])
		if err != nil {
			return fail(err)
		}
		// Idempotent: an image already on a loop device is that device
		// (after a restart, or a retried attach) — when the device holds
		// this very file, not one replaced at the same path.
		devs, err := loopDevicesFor(m[loopImageOption])
		if err != nil {
			return fail(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(m[loopImageOption], &st); err != nil {
			return fail(fmt.Errorf("disk image: %w", err))
		}
		for _, dev := range devs {
			if li, err := disk.LoopStatus(dev); err == nil && li.Backs(&st) {
				return &flexResult{Status: flexStatusSuccess, Device: dev}, nil
			}
		}
		dev, err := loopAttach(m[loopImageOption], m[optReadWrite] == "ro")
		if err != nil {
			return fail(err)
		}
		return &flexResult{Status: flexStatusSuccess, Device: dev}, nil
	case "mountdevice": // <dir> <device> <json>
		if len(args) < 3 {
			return fail(errors.New("usage: mountdevice <dir> <device> <json>"))
		}
		m, err := opts(args[2])
		if err != nil {
			return fail(err)
		}
		if err := formatAndMount(args[1], args[0], m[optFSType], m[optReadWrite] == "ro"); err != nil {
			return fail(err)
		}
		return &flexResult{Status: flexStatusSuccess}, nil
	case "detach": // <device> <node>: peapod passes the device path it attached
		if len(args) < 1 {
			return fail(errors.New("missing device"))
		}
		if !strings.HasPrefix(args[0], "/dev/loop") {
			return fail(fmt.Errorf("%q is not a loop device", args[0]))
		}
		if err := loopDetach(args[0]); err != nil {
			return fail(err)
		}
		return &flexResult{Status: flexStatusSuccess}, nil
	default:
		return &flexResult{Status: flexStatusNotSupported}, errFlexNotSupported
	}
}
