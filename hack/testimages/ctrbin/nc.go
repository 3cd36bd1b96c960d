package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// ncOpts is the client side of OpenBSD netcat that the Kubernetes e2e tests
// use (`echo hostName | nc -w 1 -u IP PORT`); Debian's busybox nc has no -u.
type ncOpts struct {
	udp, zero  bool
	wait       time.Duration // -w: connect timeout and idle timeout; 0 = none
	host, port string
}

func parseNc(args []string) (ncOpts, error) {
	var o ncOpts
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case 'u':
				o.udp = true
			case 'z':
				o.zero = true
			case 'v', 'n', 'N':
				// verbose, no DNS lookups, shutdown on EOF: accepted, no effect here
			case 'w':
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return o, errors.New("option requires an argument -- w")
					}
					i++
					val = args[i]
				}
				secs, err := strconv.ParseFloat(val, 64)
				if err != nil || secs < 0 {
					return o, fmt.Errorf("timeout invalid: %s", val)
				}
				o.wait = time.Duration(secs * float64(time.Second))
				j = len(a)
			default:
				return o, fmt.Errorf("invalid option -- '%c' (this nc is a client: -u -w SEC -z)", a[j])
			}
		}
	}
	if len(pos) != 2 {
		return o, errors.New("usage: nc [-uz] [-w timeout] destination port")
	}
	o.host, o.port = pos[0], pos[1]
	return o, nil
}

// nc connects to host:port, sends stdin and copies what comes back to
// stdout. With -w, it gives up connecting after that long and, once stdin is
// exhausted, exits when nothing arrived for that long (as OpenBSD nc does).
func nc(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parseNc(args)
	if err != nil {
		fmt.Fprintln(stderr, "nc:", err)
		return 1
	}
	network := "tcp"
	if o.udp {
		network = "udp"
	}
	conn, err := net.DialTimeout(network, net.JoinHostPort(o.host, o.port), o.wait)
	if err != nil {
		fmt.Fprintln(stderr, "nc:", err)
		return 1
	}
	defer conn.Close()
	if o.zero {
		return 0
	}
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if _, werr := conn.Write(buf[:n]); werr != nil { // one read, one datagram for UDP
					return
				}
			}
			if err != nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		if o.wait > 0 {
			// idle timeout; it ends the program only once stdin is exhausted
			_ = conn.SetReadDeadline(time.Now().Add(o.wait))
		}
		n, err := conn.Read(buf)
		if n > 0 {
			if _, err := stdout.Write(buf[:n]); err != nil {
				return 1
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case <-stdinDone:
					return 0
				default:
					continue
				}
			}
			if errors.Is(err, io.EOF) {
				return 0
			}
			fmt.Fprintln(stderr, "nc:", err)
			return 1
		}
	}
}
