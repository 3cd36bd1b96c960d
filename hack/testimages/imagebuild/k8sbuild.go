package imagebuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// K8sBinary is a program of the Kubernetes source tree that an image of
// K8sE2E holds.
type K8sBinary struct {
	Name        string // file name in the cache directory
	Pkg         string // package, relative to the tree's root
	VersionFile string // the image's VERSION file, relative to the root
	// VersionLdflag, if set, is the variable `-X VAR=<version>` sets, as
	// upstream's Makefile does (agnhost: LD_FLAGS = -X 'main.Version=$(VERSION)').
	VersionLdflag string
}

var (
	AgnhostBinary = K8sBinary{Name: "agnhost", Pkg: "./test/images/agnhost", VersionFile: "test/images/agnhost/VERSION", VersionLdflag: "main.Version"}
	NnpBinary     = K8sBinary{Name: "nnp", Pkg: "./test/images/nonewprivs", VersionFile: "test/images/nonewprivs/VERSION"}
)

// K8sBuild builds programs of a Kubernetes source tree (rewritten to build
// from the Go module proxy, see shared/NOTES.md) into a cache directory.
type K8sBuild struct {
	Src    string    // the source tree (DefaultK8sSrc)
	BinDir string    // the cache; "" = Src/../bin
	Go     string    // the go command; "" = "go" from PATH
	Log    io.Writer // go build's output; nil = discarded
}

// Result of one Ensure.
type K8sBuilt struct {
	Path    string
	Version string
	Built   bool          // false: the cached binary was reused
	Took    time.Duration // the go build, when Built
}

func (k K8sBuild) binDir() string {
	if k.BinDir != "" {
		return k.BinDir
	}
	return filepath.Join(filepath.Dir(filepath.Clean(k.Src)), "bin")
}

// Ensure returns BinDir/<name>, built from the tree as a static binary
// (CGO_ENABLED=0, -trimpath, stripped). The version of the program (its
// VERSION file) is recorded beside it in <name>.version, written after the
// binary: a binary whose recorded version matches is reused, anything else
// is rebuilt. Two concurrent runs each build into a temporary file and
// rename it into place.
func (k K8sBuild) Ensure(ctx context.Context, b K8sBinary) (K8sBuilt, error) {
	vb, err := os.ReadFile(filepath.Join(k.Src, b.VersionFile))
	if err != nil {
		return K8sBuilt{}, fmt.Errorf("%s: %w", b.Name, err)
	}
	version := strings.TrimSpace(string(vb))
	dir := k.binDir()
	out := filepath.Join(dir, b.Name)
	stamp := out + ".version"
	res := K8sBuilt{Path: out, Version: version}
	if s, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(s)) == version {
		if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() && st.Size() > 0 {
			return res, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	if k.Log != nil {
		fmt.Fprintf(k.Log, "%s %s: go build %s in %s (cached in %s afterwards)\n", b.Name, version, b.Pkg, k.Src, dir)
	}
	tmp, err := os.CreateTemp(dir, "."+b.Name+".tmp-")
	if err != nil {
		return res, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	ldflags := "-s -w"
	if b.VersionLdflag != "" {
		ldflags += " -X " + b.VersionLdflag + "=" + version
	}
	goCmd := k.Go
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", tmp.Name(), b.Pkg)
	cmd.Dir = k.Src
	cmd.Env = append(os.Environ(),
		"GOWORK=off", "GOSUMDB=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0", "GOTOOLCHAIN=local",
		"GOOS=linux", "GOARCH="+runtime.GOARCH)
	if k.Log != nil {
		cmd.Stdout, cmd.Stderr = k.Log, k.Log
	}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("go build %s in %s: %w", b.Pkg, k.Src, err)
	}
	res.Took, res.Built = time.Since(start), true
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return res, err
	}
	// the old stamp goes first: a crash between the two steps leaves no
	// stamp, never a stamp that vouches for the wrong binary
	if err := os.Remove(stamp); err != nil && !os.IsNotExist(err) {
		return res, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return res, err
	}
	if err := os.WriteFile(stamp, []byte(version+"\n"), 0o644); err != nil {
		return res, err
	}
	return res, nil
}
