// Command tcpforward relays TCP connections: each LISTEN=TARGET pair
// accepts on LISTEN and copies every connection to and from a new
// connection to TARGET, until SIGTERM or SIGINT.
//
//	tcpforward 10.131.0.254:6443=127.0.0.1:6443 10.131.0.254:5000=127.0.0.1:5000
//
// The multi-node harness (hack/cluster/harness, hosts.go) runs it on the
// real host so that the test hosts (network namespaces) reach the API
// server and the registry, which listen on 127.0.0.1 only, through their
// own link: kube-apiserver has a single --bind-address, and 0.0.0.0 would
// open it on this machine's real interfaces too. Standard library only,
// so it builds in a second.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tcpforward LISTEN=TARGET...")
		os.Exit(2)
	}
	routes, err := parseRoutes(os.Args[1:])
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := forward(ctx, routes, log.Printf); err != nil {
		log.Fatal(err)
	}
}

type route struct{ listen, target string }

func parseRoutes(args []string) ([]route, error) {
	var out []route
	for _, a := range args {
		l, t, ok := strings.Cut(a, "=")
		if !ok || l == "" || t == "" {
			return nil, fmt.Errorf("tcpforward: %q is not LISTEN=TARGET", a)
		}
		for _, hp := range []string{l, t} {
			if _, _, err := net.SplitHostPort(hp); err != nil {
				return nil, fmt.Errorf("tcpforward: %q: %w", a, err)
			}
		}
		out = append(out, route{l, t})
	}
	return out, nil
}

// forward listens on every route (all or none: it fails before serving if
// one address cannot be had) and serves until ctx ends; then it closes the
// listeners and every open connection.
func forward(ctx context.Context, routes []route, logf func(string, ...any)) error {
	var lns []net.Listener
	for _, r := range routes {
		ln, err := net.Listen("tcp", r.listen)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, ln)
		logf("forwarding %s to %s", ln.Addr(), r.target)
	}
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(ctx, ln, routes[i].target, logf)
		}()
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
	return nil
}

func serve(ctx context.Context, ln net.Listener, target string, logf func(string, ...any)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		in, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			logf("accept on %s: %v", ln.Addr(), err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(ctx, in, target, logf)
		}()
	}
}

// relay copies in <-> a new connection to target, passing each side's
// half-close on to the other, and closes both when both directions are
// done or ctx ends.
func relay(ctx context.Context, in net.Conn, target string, logf func(string, ...any)) {
	defer in.Close()
	d := net.Dialer{Timeout: 10 * time.Second}
	out, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		logf("%s -> %s: %v", in.RemoteAddr(), target, err)
		return
	}
	defer out.Close()
	stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}
