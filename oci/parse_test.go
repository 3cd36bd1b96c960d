package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLogLine(t *testing.T) {
	ts := "2026-11-23T09:23:51.224366610+00:00"
	want, _ := time.Parse(time.RFC3339Nano, ts)
	for _, tc := range []struct {
		in      string
		stream  string
		partial bool
		msg     string
		bad     bool
	}{
		{in: ts + " stdout F hello", stream: "stdout", msg: "hello"},
		{in: ts + " stderr F two words here", stream: "stderr", msg: "two words here"},
		{in: ts + " stdout P part", stream: "stdout", partial: true, msg: "part"},
		{in: ts + " stdout F ", stream: "stdout", msg: ""},
		{in: ts + " stdout F", stream: "stdout", msg: ""},
		{in: ts + " stdin F x", bad: true},
		{in: ts + " stdout X x", bad: true},
		{in: "yesterday stdout F x", bad: true},
		{in: "garbage", bad: true},
	} {
		l, err := ParseLogLine([]byte(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !l.Time.Equal(want) || l.Stream != tc.stream || l.Partial != tc.partial || string(l.Message) != tc.msg {
			t.Errorf("%q: got %+v", tc.in, l)
		}
	}
}

func TestParseExitFile(t *testing.T) {
	for in, want := range map[string]int32{"0": 0, "3": 3, "137": 137, "7\n": 7, " 255 ": 255} {
		got, err := parseExitFile([]byte(in))
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "1.5", "99999999999"} {
		if _, err := parseExitFile([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestRuntimeLogErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "runtime.log")
	log := `{"level":"warning","msg":"just a warning","time":"2026-11-23T09:00:00Z"}
{"level":"error","msg":"first","time":"2026-11-23T09:00:00Z"}

{"level":"info","msg":"info","time":"2026-11-23T09:00:00Z"}
{"level":"error","msg":"runc create failed: unable to start container process: exec: \"/x\": stat /x: no such file or directory","time":"2026-11-23T09:00:00Z"}
`
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := runtimeLogErrors(p, 3)
	want := `first; runc create failed: unable to start container process: exec: "/x": stat /x: no such file or directory`
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := runtimeLogErrors(p, 1); !strings.HasPrefix(got, "runc create failed") {
		t.Errorf("last 1: %q", got)
	}
	if got := runtimeLogErrors(filepath.Join(t.TempDir(), "none"), 3); got != "" {
		t.Errorf("missing file: %q", got)
	}
	// crun writes plain text before it has parsed --log-format.
	if m, ok := parseRuntimeLogLine([]byte("cgroups in hybrid mode not supported")); !ok || m != "cgroups in hybrid mode not supported" {
		t.Errorf("plain line: %q %v", m, ok)
	}
}

func TestCleanRuntimeMsg(t *testing.T) {
	for in, want := range map[string]string{
		`time="2026-11-23T09:42:44Z" level=error msg="exec failed: cannot exec in a stopped container"`: "exec failed: cannot exec in a stopped container",
		`time="x" level=error msg="exec: \"/no/such\": stat /no/such: no such file or directory"`:       `exec: "/no/such": stat /no/such: no such file or directory`,
		"  container does not exist \n": "container does not exist",
		`msg="unterminated`:             `msg="unterminated`,
	} {
		if got := cleanRuntimeMsg(in); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines("a\n\nb\nc\n  d  \n", 2); got != "c; d" {
		t.Errorf("got %q", got)
	}
	if got := lastLines("", 2); got != "" {
		t.Errorf("got %q", got)
	}
}

func TestBoundedBuffer(t *testing.T) {
	b := boundedBuffer{max: 5}
	for _, s := range []string{"ab", "cde", "fgh"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := string(b.Bytes()); got != "abcde" {
		t.Errorf("got %q", got)
	}
}

func TestReadExecLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "exec.log")
	ts := "2026-11-23T09:23:51.224366610+00:00"
	log := ts + " stdout F out1\n" +
		ts + " stderr F err1\n" +
		ts + " stdout P par\n" +
		ts + " stdout F tial\n" +
		ts + " stdout P no newline\n"
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errb, err := readExecLog(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "out1\npartial\nno newline" || string(errb) != "err1\n" {
		t.Errorf("stdout %q stderr %q", out, errb)
	}
	out, _, _ = readExecLog(p, 3)
	if string(out) != "out" {
		t.Errorf("bounded stdout %q", out)
	}
	if out, errb, err := readExecLog(filepath.Join(t.TempDir(), "none"), 10); out != nil || errb != nil || err != nil {
		t.Errorf("missing log: %q %q %v", out, errb, err)
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"abc", "0123456789abcdef", "a-b_c.d"} {
		if err := validID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "../x", "a\x00b"} {
		if err := validID(id); err == nil {
			t.Errorf("%q: accepted", id)
		}
	}
}

func TestIsConmonForRejectsOtherProcesses(t *testing.T) {
	if isConmonFor(os.Getpid(), "x") {
		t.Error("the test binary was taken for conmon")
	}
	if isConmonFor(1<<30, "x") {
		t.Error("a pid that does not exist was taken for conmon")
	}
}

func TestExitQueueKeepsOrderAndNeverBlocks(t *testing.T) {
	q := newExitQueue()
	for i := 0; i < 1000; i++ { // far more than any channel buffer; push must not block
		q.push(string(rune('a' + i%26)))
	}
	for i := 0; i < 1000; i++ {
		select {
		case got := <-q.ch:
			if want := string(rune('a' + i%26)); got != want {
				t.Fatalf("#%d: got %q want %q", i, got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("#%d: nothing delivered", i)
		}
	}
}

func TestNewChecksBinaries(t *testing.T) {
	dir := t.TempDir()
	_, err := New(Options{Name: "nope", Path: filepath.Join(dir, "no-such-runtime"), Root: dir, StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "no-such-runtime") {
		t.Errorf("missing runtime: %v", err)
	}
	_, err = New(Options{Name: "sh", Path: "/bin/sh", Root: dir, StateDir: dir, ConmonPath: filepath.Join(dir, "no-conmon")})
	if err == nil || !strings.Contains(err.Error(), "no-conmon") {
		t.Errorf("missing conmon: %v", err)
	}
}
