// Command peapod-csi-loop is a CSI driver (loop.csi.peapod.io) for
// file-backed ext4 disks on loop devices: the Identity, Controller and Node
// services on --endpoint, the disk files under --root, and its own plugin
// registration socket in --registration-dir for the kubelet's plugin
// watcher (no node-driver-registrar sidecar needed). It keeps no state of
// its own: a restart finds attaches in sysfs and mounts in mountinfo. See
// package peapod/csi/loop.
//
//	peapod-csi-loop --endpoint unix:///var/lib/kubelet/plugins/loop.csi.peapod.io/csi.sock \
//	    --node-id $(hostname) --root /var/lib/peapod-csi-loop \
//	    --registration-dir /var/lib/kubelet/plugins_registry
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"peapod/csi/loop"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "peapod-csi-loop: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("peapod-csi-loop", flag.ContinueOnError)
	klog.InitFlags(fs)
	endpoint := fs.String("endpoint", "unix:///run/peapod-csi-loop/csi.sock", "CSI endpoint, unix:///absolute/path")
	nodeID := fs.String("node-id", "", "this node's id (the Kubernetes node name); default: the hostname")
	root := fs.String("root", "/var/lib/peapod-csi-loop", "directory of the disk files (<volume id>.img)")
	regDir := fs.String("registration-dir", "", "the kubelet's plugins_registry dir (e.g. /var/lib/kubelet/plugins_registry): serve "+loop.DriverName+"-reg.sock there; empty: no registration")
	maxVolumes := fs.Int64("max-volumes", 64, "most volumes attached on this node at once (NodeGetInfo max_volumes_per_node); 0: no limit")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *version {
		fmt.Println(loop.DriverName, loop.Version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--node-id not given and no hostname: %w", err)
		}
		*nodeID = h
	}
	d, err := loop.New(loop.Options{NodeID: *nodeID, Root: *root, MaxVolumesPerNode: *maxVolumes})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return d.Serve(ctx, *endpoint, *regDir)
}
