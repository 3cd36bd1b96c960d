// Command write writes a reference containerd's config for shell scripts
// (hack/conformance/run.sh) and prints, one per line, the containerd binary,
// the PATH it must run with (its own shim first), the config's path and the
// host dirs outside -dir it will create that do not exist now (space
// separated; the script removes them, when empty, afterwards).
//
//	go run ./hack/containerdref/write -which debian|current -dir D -cni-conf-dir C -registry HOST:PORT
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"peapod/hack/containerdref"
)

func main() {
	which := flag.String("which", "debian", "debian (Debian's containerd 1.6) or current (containerd "+containerdref.CurrentVersion+" from the cache)")
	var o containerdref.Options
	flag.StringVar(&o.Dir, "dir", "", "scratch dir for every socket, state and root dir (absolute)")
	flag.StringVar(&o.CNIConfDir, "cni-conf-dir", "", "CNI conf dir")
	flag.StringVar(&o.Registry, "registry", "", "host:port of the local registry")
	mirrored := flag.String("mirrored", "registry.k8s.io,gcr.io,docker.io,public.ecr.aws", "registry hosts sent to -registry")
	flag.Parse()
	o.Mirrored = strings.Split(*mirrored, ",")
	var in containerdref.Install
	var err error
	switch *which {
	case "debian":
		in, err = containerdref.Debian()
	case "current":
		in, err = containerdref.Current()
	default:
		err = fmt.Errorf("-which %q: debian or current", *which)
	}
	if err == nil {
		var path string
		if path, err = in.Write(o); err == nil {
			env := in.Command(path).Env
			var made []string
			for _, d := range in.HostDirs(o.Dir) {
				if _, err := os.Lstat(d); os.IsNotExist(err) {
					made = append(made, d)
				}
			}
			fmt.Printf("%s\n%s\n%s\n%s\n", in.Bin, strings.TrimPrefix(env[len(env)-1], "PATH="), path, strings.Join(made, " "))
			return
		}
	}
	fmt.Fprintln(os.Stderr, "containerdref:", err)
	os.Exit(1)
}
