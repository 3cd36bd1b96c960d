// Command peapod is the node agent: a CRI runtime (serve) plus its helper
// subcommands. main only parses arguments and wires packages together.
package main

import (
	"fmt"
	"os"

	"peapod/sandbox/pause"
)

const usage = `peapod — a Kubernetes node agent: CRI runtime and static pod runner

Usage:
  peapod serve [--config FILE] [flags]   run the daemon (FILE defaults to /etc/peapod/peapod.toml when it exists)
  peapod config default                  print the full default config
  peapod pods [--config FILE]            the agent's pods, as a table (from GET /pods)
  peapod images import [--config FILE] FILE
                                         load an OCI layout or docker-save archive into the running daemon
  peapod images export [--config FILE] FILE REF...
                                         write images of the running daemon as an archive
  peapod check [--config FILE]           check this host for what peapod needs
  peapod version                         print the version
  peapod pause                           the pod infra process (run by peapod itself)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(args)
	case "config":
		err = runConfig(args)
	case "pods":
		err = runPods(args)
	case "images":
		err = runImages(args)
	case "check":
		err = runCheck(args)
	case "version", "--version":
		err = runVersion(args)
	case "pause":
		os.Exit(pause.Run(args))
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "peapod: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "peapod: %v\n", err)
		os.Exit(1)
	}
}
