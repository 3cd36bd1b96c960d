package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseCurl(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want curlOpts
		err  string
	}{
		{
			name: "dial command of the e2e network utils",
			args: []string{"-g", "-q", "-s", "http://10.0.0.1:8080/dial?request=hostname&protocol=http&host=10.0.0.2&port=8083&tries=1"},
			want: curlOpts{silent: true, method: "GET", connectTimeout: 300 * time.Second,
				url: "http://10.0.0.1:8080/dial?request=hostname&protocol=http&host=10.0.0.2&port=8083&tries=1"},
		},
		{
			name: "status code only",
			args: []string{"-g", "-q", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://h:80/healthz"},
			want: curlOpts{silent: true, output: "/dev/null", writeOut: "%{http_code}", method: "GET",
				connectTimeout: 300 * time.Second, url: "http://h:80/healthz"},
		},
		{
			name: "combined flags, attached value, timeouts, scheme added",
			args: []string{"-gqsi", "-o/tmp/x", "--max-time", "15", "--connect-timeout", "1", "localhost:10249/proxyMode"},
			want: curlOpts{silent: true, include: true, output: "/tmp/x", method: "GET", maxTime: 15 * time.Second,
				connectTimeout: time.Second, url: "http://localhost:10249/proxyMode"},
		},
		{
			name: "options after the URL, data makes it a POST",
			args: []string{"http://h/echo", "-d", "a=1", "-d", "b=2", "-H", "X-T: v", "-fL"},
			want: curlOpts{fail: true, follow: true, method: "POST", data: []string{"a=1", "b=2"}, headers: []string{"X-T: v"},
				connectTimeout: 300 * time.Second, url: "http://h/echo"},
		},
		{name: "unknown option", args: []string{"-Z", "http://h/"}, err: "-Z: is unknown"},
		{name: "missing value", args: []string{"http://h/", "-o"}, err: "requires parameter"},
		{name: "bad number", args: []string{"-m", "soon", "http://h/"}, err: "numerical"},
		{name: "no URL", args: []string{"-s"}, err: "no URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCurl(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestCurl(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-Method", r.Method)
			_, _ = w.Write([]byte(r.URL.Query().Get("msg")))
		case "/moved":
			http.Redirect(w, r, "/echo?msg=redirected", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	// a port nothing listens on: the listener is closed again at once
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	out := filepath.Join(t.TempDir(), "out")

	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     string // exact, unless contains is set
		contains   bool
		stderrWant string
		file       string
	}{
		{name: "body", args: []string{"-s", srv.URL + "/echo?msg=poststart"}, stdout: "poststart"},
		{name: "status code of a 404", args: []string{"-g", "-q", "-s", "-o", "/dev/null", "-w", "%{http_code}", srv.URL + "/nope"}, stdout: "404"},
		{name: "fail on 404", args: []string{"-sf", srv.URL + "/nope"}, code: curlHTTPError},
		{name: "include headers", args: []string{"-i", "-s", srv.URL + "/echo?msg=x"}, stdout: "HTTP/1.1 200 OK\r\n", contains: true},
		{name: "no redirect without -L", args: []string{"-s", "-w", "%{http_code}\\n", "-o", out, srv.URL + "/moved"}, stdout: "302\n"},
		{name: "redirect with -L", args: []string{"-sL", "-o", out, srv.URL + "/moved"}, file: "redirected"},
		{name: "connection refused", args: []string{"-s", "-w", "%{http_code}", "--connect-timeout", "1", "http://" + closed + "/"}, code: curlNoConnect, stdout: "000"},
		{name: "error shown without -s", args: []string{"http://" + closed + "/"}, code: curlNoConnect, stderrWant: "curl: (7)"},
		{name: "bad URL", args: []string{"-s", "ftp://x/"}, code: curlBadURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := curl(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if tc.contains {
				if !strings.Contains(stdout.String(), tc.stdout) {
					t.Errorf("stdout %q does not contain %q", stdout.String(), tc.stdout)
				}
			} else if stdout.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
			if tc.stderrWant != "" && !strings.Contains(stderr.String(), tc.stderrWant) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderrWant)
			}
			if tc.file != "" {
				b, err := os.ReadFile(out)
				if err != nil || string(b) != tc.file {
					t.Errorf("output file %q %v, want %q", b, err, tc.file)
				}
			}
		})
	}
}

func TestParseNc(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want ncOpts
		err  bool
	}{
		{args: []string{"-w", "1", "-u", "10.0.0.1", "8081"}, want: ncOpts{udp: true, wait: time.Second, host: "10.0.0.1", port: "8081"}},
		{args: []string{"-uw1", "h", "80"}, want: ncOpts{udp: true, wait: time.Second, host: "h", port: "80"}},
		{args: []string{"-vz", "h", "80"}, want: ncOpts{zero: true, host: "h", port: "80"}},
		{args: []string{"-l", "80"}, err: true},
		{args: []string{"h"}, err: true},
		{args: []string{"-w", "x", "h", "1"}, err: true},
	} {
		got, err := parseNc(tc.args)
		if tc.err {
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v %v, want %+v", tc.args, got, err, tc.want)
		}
	}
}

// TestNcUDP is the e2e test's `echo hostName | nc -w 1 -u IP PORT` against a
// UDP server on loopback that answers like agnhost netexec.
func TestNcUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1024)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if strings.TrimSpace(string(buf[:n])) == "hostName" {
				_, _ = pc.WriteTo([]byte("netserver-0"), addr)
			}
		}
	}()
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := nc([]string{"-w", "1", "-u", "127.0.0.1", port}, strings.NewReader("hostName\n"), &stdout, &stderr)
	if code != 0 || stdout.String() != "netserver-0" {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v; -w 1 should end it about 1 s after the reply", d)
	}
}

func TestNcTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		_, _ = c.Write([]byte("echo:" + string(buf[:n])))
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	var stdout, stderr bytes.Buffer
	if code := nc([]string{"-w", "2", "127.0.0.1", port}, strings.NewReader("hi"), &stdout, &stderr); code != 0 || stdout.String() != "echo:hi" {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
	if code := nc([]string{"-z", "-w", "1", "127.0.0.1", strconv.Itoa(1)}, strings.NewReader(""), &stdout, &stderr); code == 0 {
		t.Errorf("-z to a closed port: exit 0")
	}
}
