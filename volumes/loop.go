package volumes

import "peapod/volumes/disk"

// The loop ioctls live in volumes/disk, shared with the CSI driver
// (csi/loop), which must not link this package's Kubernetes imports.

func loopAttach(image string, readOnly bool) (string, error) { return disk.LoopAttach(image, readOnly) }
func loopDetach(dev string) error                            { return disk.LoopDetach(dev) }
func loopDevicesFor(image string) ([]string, error)          { return disk.LoopDevicesFor(image) }

type loopInfo = disk.LoopInfo

func loopDevices() ([]loopInfo, error) { return disk.LoopDevices() }
