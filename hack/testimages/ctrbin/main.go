// Command ctrbin is the one static program inside peapod's conformance test
// images (hack/testimages/imagebuild.Conformance for critest, K8sE2E for the
// Kubernetes node e2e specs) where busybox cannot play the part the tests
// expect. What it does depends on the name it runs as:
//
//	nginx [-port N]   serve /usr/share/nginx/html on :80 (or N), write the pid
//	                  to /var/run/nginx.pid; the process is named nginx, as
//	                  the real one (critest checks `pidof nginx`)
//	httpd [-port N]   the same page on :80, and "httpd" on stdout first
//	                  (critest's multi-container spec looks for it in the log)
//	nonewprivs        print "Effective uid: N" (installed setuid root: with
//	                  no_new_privs the kernel ignores the bit)
//	pgrep PATTERN     pids of processes whose name matches (Debian's
//	                  busybox-static has no pgrep applet)
//	ipcs [-m]         the System V shared memory segments (nor ipcs)
//	curl [opts] URL   the curl options the Kubernetes e2e tests use: -g -q -s
//	                  -S -i -f -L -k -I -o FILE -w FMT (%{http_code}) -m SECS
//	                  --connect-timeout SECS -X -d -H, curl's exit codes
//	                  (upstream's agnhost image has Alpine's curl)
//	nc [-uz] [-w SECS] HOST PORT   an OpenBSD-netcat client: stdin out, the
//	                  replies to stdout, -w as connect and idle timeout
//	                  (Debian's busybox nc has no -u)
//
// Arguments after nginx's flags are ignored; the nginx image passes
// "master process" as one, so /proc/1/cmdline carries it as the real
// nginx's retitled master does.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	name := filepath.Base(os.Args[0])
	switch name {
	case "nonewprivs":
		fmt.Printf("Effective uid: %d\n", os.Geteuid())
	case "pgrep":
		os.Exit(pgrep(os.Args[1:]))
	case "ipcs":
		ipcs()
	case "curl":
		os.Exit(curl(os.Args[1:], os.Stdout, os.Stderr))
	case "nc":
		os.Exit(nc(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	case "nginx", "httpd":
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		port := fs.Int("port", 80, "TCP port")
		_ = fs.Parse(os.Args[1:]) // upstream's own flags (-g 'daemon off;') are ignored
		if name == "nginx" {
			_ = os.MkdirAll("/var/run", 0o755)
			if err := os.WriteFile("/var/run/nginx.pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		fmt.Printf("%s: serving /usr/share/nginx/html on :%d\n", name, *port)
		err := http.ListenAndServe(":"+strconv.Itoa(*port), http.FileServer(http.Dir("/usr/share/nginx/html")))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "ctrbin: unknown name %q (nginx, httpd, nonewprivs, pgrep, ipcs, curl, nc)\n", name)
		os.Exit(2)
	}
}

func pgrep(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: pgrep PATTERN")
		return 2
	}
	re, err := regexp.Compile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgrep:", err)
		return 2
	}
	ents, _ := os.ReadDir("/proc")
	found := 1
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		if re.MatchString(strings.TrimSpace(string(comm))) {
			fmt.Println(pid)
			found = 0
		}
	}
	return found
}

// ipcs prints /proc/sysvipc/shm in util-linux's layout.
func ipcs() {
	fmt.Print("\n------ Shared Memory Segments --------\nkey        shmid      owner      perms      bytes      nattch     status\n")
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		// key shmid perms size cpid lpid nattch uid ...
		key, _ := strconv.ParseInt(f[0], 10, 64)
		fmt.Printf("0x%08x %-10s %-10s %-10s %-10s %-10s\n", uint32(key), f[1], f[7], f[2], f[3], f[6])
	}
	fmt.Println()
}
