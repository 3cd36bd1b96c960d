// Package failpoint is the control side of the cni-failpoint test plugin
// (cmd/cni-failpoint): a CNI plugin that delegates to a real one and fails
// ADD, DEL or CHECK on demand, as containerd's integration/failpoint
// cni-bridge-fp does.
//
// A test switches failures on per pod with a JSON file in the plugin's
// "controlDir", named after the pod (K8S_POD_NAME, else the container id):
//
//	{"cmdAdd": "1*error(oops)", "cmdDel": "2*error(busy)->off"}
//
// Each value is a failpoint expression: terms joined by "->", each
// "[N*]error(message)" or "[N*]off". The first term is used; one with a
// count N is used N times and then dropped. A term without a count stays.
// An empty expression is "off". The plugin writes the file back after each
// evaluation, under an flock, so counts hold across plugin processes.
//
// When a failure strikes: ADD fails after the delegate's ADD succeeded (the
// interface and IP exist, so the runtime's rollback is what gets tested);
// DEL and CHECK fail before the delegate runs (nothing is freed).
package failpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Control is one pod's control file.
type Control struct {
	CmdAdd   string `json:"cmdAdd,omitempty"`
	CmdDel   string `json:"cmdDel,omitempty"`
	CmdCheck string `json:"cmdCheck,omitempty"`
}

// Term is one step of an expression.
type Term struct {
	Count int    // 0: forever
	Err   string // "" with Off
	Off   bool
}

// Parse reads an expression.
func Parse(expr string) ([]Term, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, nil
	}
	var terms []Term
	for _, s := range strings.Split(expr, "->") {
		s = strings.TrimSpace(s)
		var t Term
		if n, rest, ok := strings.Cut(s, "*"); ok && !strings.Contains(n, "(") {
			c, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil || c < 1 {
				return nil, fmt.Errorf("failpoint %q: bad count %q", expr, n)
			}
			t.Count, s = c, strings.TrimSpace(rest)
		}
		switch {
		case s == "off":
			t.Off = true
		case strings.HasPrefix(s, "error(") && strings.HasSuffix(s, ")"):
			t.Err = s[len("error(") : len(s)-1]
			if t.Err == "" {
				t.Err = "failpoint"
			}
		default:
			return nil, fmt.Errorf("failpoint %q: bad term %q (want [N*]error(msg) or [N*]off)", expr, s)
		}
		terms = append(terms, t)
	}
	return terms, nil
}

// Format writes terms back as an expression.
func Format(terms []Term) string {
	parts := make([]string, 0, len(terms))
	for _, t := range terms {
		s := "off"
		if !t.Off {
			s = "error(" + t.Err + ")"
		}
		if t.Count > 0 {
			s = strconv.Itoa(t.Count) + "*" + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "->")
}

// Eval evaluates expr once: the message to fail with ("": go on) and the
// expression left for next time.
func Eval(expr string) (fail, left string, err error) {
	terms, err := Parse(expr)
	if err != nil || len(terms) == 0 {
		return "", expr, err
	}
	t := terms[0]
	if t.Count > 0 {
		terms[0].Count--
		if terms[0].Count == 0 {
			terms = terms[1:]
		}
	}
	if !t.Off {
		fail = t.Err
	}
	return fail, Format(terms), nil
}

// FileName is the control file for a pod name or container id in dir.
func FileName(dir, key string) string {
	return filepath.Join(dir, strings.ReplaceAll(key, "/", "_")+".json")
}

// Write writes a pod's control file; tests call it.
func Write(dir, key string, c Control) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(FileName(dir, key), data, 0o644)
}

// Evaluate evaluates the failpoint for cmd ("ADD", "DEL", "CHECK") in the
// control file of the first key that has one, and stores what is left.
// It returns the message to fail with, "" for none; no file means no failure.
func Evaluate(dir string, keys []string, cmd string) (string, error) {
	for _, key := range keys {
		if key == "" {
			continue
		}
		path := FileName(dir, key)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			return "", err
		}
		var c Control
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if len(data) > 0 {
			if err := json.Unmarshal(data, &c); err != nil {
				return "", fmt.Errorf("failpoint control %s: %w", path, err)
			}
		}
		var expr *string
		switch cmd {
		case "ADD":
			expr = &c.CmdAdd
		case "DEL":
			expr = &c.CmdDel
		case "CHECK":
			expr = &c.CmdCheck
		default:
			return "", nil
		}
		fail, left, err := Eval(*expr)
		if err != nil {
			return "", err
		}
		*expr = left
		out, _ := json.Marshal(c)
		if err := f.Truncate(0); err != nil {
			return "", err
		}
		if _, err := f.WriteAt(out, 0); err != nil {
			return "", err
		}
		return fail, nil
	}
	return "", nil
}
