package oci

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAttachStdinOnce(t *testing.T) {
	e := newEnv(t)
	e.createWith(CreateOptions{ID: "cat", Stdin: true, StdinOnce: true}, []string{"sh", "-c", "cat; echo done >&2; exit 6"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	pr, pw := io.Pipe()
	go func() { done <- e.rt.Attach(ctx, "cat", pr, &stdout, &stderr, nil) }()
	time.Sleep(100 * time.Millisecond) // attached before the process runs
	if err := e.rt.Start(ctx, "cat"); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	pw.Close() // stdin EOF: conmon closes cat's stdin (StdinOnce)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Attach did not return after the container exited")
	}
	if stdout.String() != "hello\n" || stderr.String() != "done\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	waitExit(t, e.rt, "cat", 10*time.Second)
	if st := e.state("cat"); st.ExitCode != 6 {
		t.Errorf("state %+v", st)
	}
	waitLog(t, e.logPath("cat"), "hello", time.Second)
}

func TestAttachTerminalResize(t *testing.T) {
	e := newEnv(t)
	e.createWith(CreateOptions{ID: "tty", Terminal: true, Stdin: true}, []string{"sh", "-c", "read x; stty size; exit 0"})
	if err := e.rt.Start(context.Background(), "tty"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout syncBuffer
	resize := make(chan Size, 1)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- e.rt.Attach(ctx, "tty", pr, &stdout, nil, resize) }()
	resize <- Size{Width: 123, Height: 45}
	time.Sleep(200 * time.Millisecond)
	if _, err := pw.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Attach did not return; output so far %q", stdout.String())
	}
	pw.Close()
	if !strings.Contains(stdout.String(), "45 123") {
		t.Errorf("terminal output %q: want the size 45 123", stdout.String())
	}
}

func TestExecStreams(t *testing.T) {
	e := newEnv(t)
	e.run("ex", []string{"sleep", "1000"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("pipes", func(t *testing.T) {
		var stdout, stderr syncBuffer
		code, err := e.rt.Exec(ctx, "ex", []string{"sh", "-c", "cat; echo e >&2; exit 3"}, false, strings.NewReader("abc\n"), &stdout, &stderr, nil)
		if err != nil || code != 3 || stdout.String() != "abc\n" || stderr.String() != "e\n" {
			t.Fatalf("code %d err %v stdout %q stderr %q", code, err, stdout.String(), stderr.String())
		}
	})
	t.Run("tty with resize", func(t *testing.T) {
		var stdout syncBuffer
		pr, pw := io.Pipe()
		defer pw.Close()
		resize := make(chan Size, 1)
		done := make(chan error, 1)
		var code int32
		go func() {
			var err error
			code, err = e.rt.Exec(ctx, "ex", []string{"sh", "-c", "read x; stty size; exit 4"}, true, pr, &stdout, nil, resize)
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		resize <- Size{Width: 99, Height: 33}
		time.Sleep(200 * time.Millisecond)
		if _, err := pw.Write([]byte("go\r")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("Exec did not return; output %q", stdout.String())
		}
		if code != 4 || !strings.Contains(stdout.String(), "33 99") {
			t.Errorf("code %d output %q", code, stdout.String())
		}
	})
	t.Run("missing binary", func(t *testing.T) {
		_, err := e.rt.Exec(ctx, "ex", []string{"/no/such"}, false, nil, io.Discard, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("err = %v", err)
		}
	})
}
