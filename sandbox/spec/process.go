package spec

import (
	"errors"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultPath is the PATH a process gets when neither the image nor the CRI
// config sets one (the same as containerd's and Docker's default).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Command merges the CRI command/args with the image's Entrypoint/Cmd using
// the Docker rules the kubelet documents:
//
//	command  args   → result
//	-        -      → Entrypoint + Cmd
//	-        a      → Entrypoint + a
//	c        -      → c            (the image Cmd is dropped too)
//	c        a      → c + a
//
// An image Entrypoint of [""] means "no entrypoint" (docker build's
// `ENTRYPOINT [""]`). An empty result is an error naming "command".
func Command(cfg *runtimeapi.ContainerConfig, img *v1.Config) ([]string, error) {
	if img == nil {
		img = &v1.Config{}
	}
	command, args := cfg.GetCommand(), cfg.GetArgs()
	var out []string
	if len(command) > 0 {
		out = append(out, command...)
	} else {
		if !(len(img.Entrypoint) == 1 && img.Entrypoint[0] == "") {
			out = append(out, img.Entrypoint...)
		}
		if len(args) == 0 {
			args = img.Cmd
		}
	}
	out = append(out, args...)
	if len(out) == 0 {
		return nil, &FieldError{Field: "command", Err: errors.New("no command specified: the container config has neither command nor args and the image has neither Entrypoint nor Cmd")}
	}
	return out, nil
}

// Env builds the process environment: a default PATH, HOSTNAME=hostname (if
// hostname is not empty), the image's Env, then the CRI envs. A later entry
// for the same key replaces the earlier value in place, so the CRI wins over
// the image and the image over the defaults. Entries without "=" are kept
// as they are (runc passes them through).
func Env(cfg *runtimeapi.ContainerConfig, img *v1.Config, hostname string) []string {
	e := newEnvList()
	e.set("PATH=" + DefaultPath)
	if hostname != "" {
		e.set("HOSTNAME=" + hostname)
	}
	if img != nil {
		for _, kv := range img.Env {
			e.set(kv)
		}
	}
	for _, kv := range cfg.GetEnvs() {
		e.set(kv.GetKey() + "=" + string(kv.GetValue()))
	}
	return e.list
}

type envList struct {
	list  []string
	index map[string]int
}

func newEnvList() *envList { return &envList{index: map[string]int{}} }

func (e *envList) set(kv string) {
	k, _, _ := strings.Cut(kv, "=")
	if i, ok := e.index[k]; ok {
		e.list[i] = kv
		return
	}
	e.index[k] = len(e.list)
	e.list = append(e.list, kv)
}

// WorkingDir is the CRI working_dir, else the image WorkingDir, else "/".
// The OCI runtime needs an absolute path: a relative working_dir is the
// caller's mistake (refused, as docker run -w refuses it); a relative image
// WorkingDir is taken from "/", as the image builder meant it.
func WorkingDir(cfg *runtimeapi.ContainerConfig, img *v1.Config) (string, error) {
	if wd := cfg.GetWorkingDir(); wd != "" {
		if !path.IsAbs(wd) {
			return "", fieldErr("working_dir", "%q must be an absolute path", wd)
		}
		return path.Clean(wd), nil
	}
	if img != nil && img.WorkingDir != "" {
		return path.Join("/", img.WorkingDir), nil
	}
	return "/", nil
}
