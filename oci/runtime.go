package oci

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ErrNotFound is returned (wrapped) for an id that neither the runtime nor
// peapod's state dir knows.
var ErrNotFound = errors.New("container not found")

// Options configure one runtime handler.
type Options struct {
	Name       string // handler name: "runc" / "crun"
	Path       string // runtime binary
	Root       string // runtime --root state dir
	StateDir   string // peapod's per-container conmon files: <StateDir>/<id>/...
	ConmonPath string // default: conmon from PATH, else /usr/bin/conmon
	// CreateTimeout bounds a create whatever the caller's context; 0: 4m.
	CreateTimeout time.Duration
}

// Runtime drives one OCI runtime binary under conmon.
type Runtime struct {
	name, path, root, stateDir, conmon string
	createTimeout                      time.Duration

	checkMu   sync.Mutex
	checkDone bool
	checkErr  error

	featuresMu sync.Mutex
	features   *Features // `runtime features`, once asked (features.go)

	mu       sync.Mutex
	monitors map[string]*monitor
	exits    *exitQueue
}

// New checks that the runtime and conmon binaries exist and creates the
// state directories.
func New(o Options) (*Runtime, error) {
	if o.Name == "" {
		o.Name = filepath.Base(o.Path)
	}
	if o.Path == "" {
		o.Path = o.Name
	}
	path, err := exec.LookPath(o.Path)
	if err != nil {
		return nil, fmt.Errorf("oci runtime %s: binary %q: %w", o.Name, o.Path, err)
	}
	conmonPath, err := FindConmon(o.ConmonPath)
	if err != nil {
		return nil, fmt.Errorf("oci runtime %s: %w", o.Name, err)
	}
	if o.Root == "" || o.StateDir == "" {
		return nil, fmt.Errorf("oci runtime %s: Root and StateDir are required", o.Name)
	}
	for _, d := range []string{o.Root, o.StateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("oci runtime %s: %w", o.Name, err)
		}
	}
	if o.CreateTimeout <= 0 {
		o.CreateTimeout = 4 * time.Minute
	}
	return &Runtime{
		name: o.Name, path: path, root: o.Root, stateDir: o.StateDir, conmon: conmonPath,
		createTimeout: o.CreateTimeout,
		monitors:      map[string]*monitor{},
		exits:         newExitQueue(),
	}, nil
}

// Name is the handler name.
func (r *Runtime) Name() string { return r.name }

func (r *Runtime) dir(id string) string { return filepath.Join(r.stateDir, id) }

func (r *Runtime) exitFile(id string) string { return filepath.Join(r.dir(id), "exits", id) }

// validID keeps ids from escaping the state dir.
func validID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return fmt.Errorf("invalid container id %q", id)
	}
	return nil
}

// meta is what Create records for later calls (and for a restarted peapod).
type meta struct {
	Bundle  string    `json:"bundle"`
	LogPath string    `json:"logPath"`
	Created time.Time `json:"created"`
	// ConmonCgroup is the cgroupfs path conmon was moved into; removed
	// with the container.
	ConmonCgroup string `json:"conmonCgroup,omitempty"`
}

func (r *Runtime) readMeta(id string) (*meta, error) {
	b, err := os.ReadFile(filepath.Join(r.dir(id), "meta.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("container %s: meta.json: %w", id, err)
	}
	return &m, nil
}

// runtimeError is a failed runtime invocation with what it said.
type runtimeError struct {
	id, op string
	msg    string
	err    error
}

func (e *runtimeError) Error() string {
	s := fmt.Sprintf("container %s: %s", e.id, e.op)
	if e.msg != "" {
		s += ": " + e.msg
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *runtimeError) Unwrap() error { return e.err }

// run invokes the runtime with --root and args; stdin may be nil. Stderr is
// captured into the error. Only for subcommands that leave no process
// holding stdio (not create/exec).
func (r *Runtime) run(ctx context.Context, id, op string, stdin io.Reader, args ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, r.path, append([]string{"--root", r.root}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	klog.V(4).InfoS("Ran OCI runtime", "runtime", r.name, "id", id, "args", args, "duration", time.Since(start), "err", err)
	if err != nil {
		return stdout.Bytes(), &runtimeError{id: id, op: r.name + " " + op, msg: cleanRuntimeMsg(lastLines(stderr.String(), 3)), err: err}
	}
	return stdout.Bytes(), nil
}

// lastLines returns the last n non-empty lines of s, joined by "; ".
func lastLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "; ")
}

// runtimeLogErrors reads a runtime --log file written with --log-format=json
// (runc and crun both) and returns the messages of its error-level lines, the
// last n of them, as CRI-O does for conmon-driven calls.
func runtimeLogErrors(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msgs []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := parseRuntimeLogLine(sc.Bytes()); ok {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) > n {
		msgs = msgs[len(msgs)-n:]
	}
	return strings.Join(msgs, "; ")
}

// parseRuntimeLogLine returns the message of an error- or fatal-level json
// log line ({"level":"error","msg":"...","time":"..."}). Non-json lines
// (crun before it parses --log-format) count as errors.
func parseRuntimeLogLine(line []byte) (string, bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return "", false
	}
	var l struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return string(line), true
	}
	switch l.Level {
	case "error", "fatal", "panic":
		return l.Msg, l.Msg != ""
	}
	return "", false
}

// cleanRuntimeMsg turns a runtime's logrus text line (`time="..."
// level=error msg="exec failed: ..."`) into its message; other text is
// returned trimmed.
func cleanRuntimeMsg(s string) string {
	s = strings.TrimSpace(s)
	i := strings.Index(s, `msg="`)
	if i < 0 {
		return s
	}
	rest := s[i+len("msg="):]
	// Find the closing quote of the Go-quoted value.
	for j := 1; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '"' {
			if u, err := strconv.Unquote(rest[:j+1]); err == nil {
				return u
			}
			break
		}
	}
	return s
}

// isNotExist reports whether a runtime error says the container is unknown.
func isNotExist(err error) bool {
	var re *runtimeError
	if !errors.As(err, &re) {
		return false
	}
	m := strings.ToLower(re.msg)
	return strings.Contains(m, "does not exist") || strings.Contains(m, "not found") ||
		strings.Contains(m, "no such file")
}

// isNotRunning reports whether a kill failed because the process is gone.
func isNotRunning(err error) bool {
	var re *runtimeError
	if !errors.As(err, &re) {
		return false
	}
	m := strings.ToLower(re.msg)
	return strings.Contains(m, "not running") || strings.Contains(m, "process already finished") ||
		strings.Contains(m, "no such process") || strings.Contains(m, "container is stopped")
}
