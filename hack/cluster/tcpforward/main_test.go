package main

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseRoutes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"10.1.0.254:6443=127.0.0.1:6443"}, true},
		{[]string{"10.1.0.254:6443=127.0.0.1:6443", "10.1.0.254:5000=127.0.0.1:5000"}, true},
		{[]string{"10.1.0.254:6443"}, false},
		{[]string{"10.1.0.254=127.0.0.1:6443"}, false},
		{[]string{"=127.0.0.1:6443"}, false},
	} {
		_, err := parseRoutes(tt.args)
		if (err == nil) != tt.ok {
			t.Errorf("parseRoutes(%q): %v, want ok=%v", tt.args, err, tt.ok)
		}
	}
}

// An echo server behind the forwarder: bytes go both ways, a half-close
// reaches the target, and cancelling the context ends open connections.
func TestForward(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c) // until the client's half-close
				_, _ = c.Write([]byte(strings.ToUpper(string(b))))
			}()
		}
	}()
	// A free port for the forwarder's listener.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- forward(ctx, []route{{addr, echo.Addr().String()}}, t.Logf) }()
	var c net.Conn
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "HELLO" {
		t.Fatalf("got %q, %v", got, err)
	}
	c.Close()
	// An idle open connection must not keep forward from returning.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forward did not return after cancel")
	}
}
