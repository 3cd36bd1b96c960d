// Package disk holds the kernel-facing helpers for disks on the node: loop
// devices through their ioctls and sysfs (attach, detach, which file backs
// which device, capacity), /proc/self/mountinfo, bind mounts, and format
// then mount. It imports nothing from Kubernetes, so both the volume manager
// (package volumes, the agent's) and the CSI driver (csi/loop, its own small
// binary) use it. State lives in the kernel only: a caller that restarts
// finds every attach in sysfs and every mount in mountinfo.
package disk
