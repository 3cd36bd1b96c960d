package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Loop devices through the kernel's ioctls, as losetup(8) does: take a free
// index from /dev/loop-control, bind the image fd with LOOP_CONFIGURE (one
// call, since 5.8) and fall back to LOOP_SET_FD + LOOP_SET_STATUS64.

// SysBlockDir is where the loop devices' sysfs entries are (a variable for tests).
var SysBlockDir = "/sys/block"

// LoopAttach attaches image to a free loop device and returns its path.
func LoopAttach(image string, readOnly bool) (string, error) {
	flags := os.O_RDWR
	if readOnly {
		flags = os.O_RDONLY
	}
	img, err := os.OpenFile(image, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open image: %w", err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open loop-control: %w", err)
	}
	defer ctl.Close()

	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		if _, err := os.Stat(dev); os.IsNotExist(err) {
			// No devtmpfs node (yet): make one, block major 7.
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
				return "", fmt.Errorf("mknod %s: %w", dev, err)
			}
		}
		lf, err := os.OpenFile(dev, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("open %s: %w", dev, err)
		}
		err = loopConfigure(lf, img, image, readOnly)
		lf.Close()
		if err == nil {
			return dev, nil
		}
		lastErr = err
		if errors.Is(err, unix.EBUSY) {
			// Another process took this device between GET_FREE and
			// CONFIGURE; ask for the next free one.
			continue
		}
		return "", err
	}
	return "", fmt.Errorf("no free loop device: %w", lastErr)
}

func loopConfigure(lf, img *os.File, name string, readOnly bool) error {
	var info unix.LoopInfo64
	copy(info.File_name[:], name)
	if readOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: info}
	err := unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("LOOP_CONFIGURE %s: %w", lf.Name(), err)
	}
	// Kernels before 5.8.
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err != nil {
		return fmt.Errorf("LOOP_SET_FD %s: %w", lf.Name(), err)
	}
	if err := unix.IoctlLoopSetStatus64(int(lf.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("LOOP_SET_STATUS64 %s: %w", lf.Name(), err)
	}
	return nil
}

// LoopDetach detaches dev and waits until the kernel has let go of the
// backing file.
func LoopDetach(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
	f.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) { // ENXIO: not attached
		return fmt.Errorf("LOOP_CLR_FD %s: %w", dev, err)
	}
	for i := 0; i < 50; i++ {
		if _, ok := LoopBackingFile(filepath.Base(dev)); !ok {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s still attached after LOOP_CLR_FD", dev)
}

// LoopBackingFile returns the backing file of /sys/block/<name>, if any.
func LoopBackingFile(name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(SysBlockDir, name, "loop", "backing_file"))
	if err != nil {
		return "", false
	}
	s := strings.TrimSpace(string(b))
	return s, s != ""
}

// LoopDevicesFor returns every loop device whose backing file is image.
func LoopDevicesFor(image string) ([]string, error) {
	want := image
	if r, err := filepath.EvalSymlinks(image); err == nil {
		want = r
	}
	want = filepath.Clean(want)
	ents, err := os.ReadDir(SysBlockDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		bf, ok := LoopBackingFile(e.Name())
		if !ok {
			continue
		}
		if bf == want || bf == image {
			out = append(out, "/dev/"+e.Name())
		}
	}
	return out, nil
}

// LoopReadOnly reports whether the loop device dev (/dev/loopN) is attached
// read-only.
func LoopReadOnly(dev string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(SysBlockDir, filepath.Base(dev), "ro"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// LoopSetCapacity makes the kernel re-read the size of dev's backing file
// (losetup --set-capacity), after the file has grown.
func LoopSetCapacity(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	return nil
}

// DeviceSize is the size in bytes of block device dev, from sysfs (512-byte
// sectors).
func DeviceSize(dev string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(SysBlockDir, filepath.Base(dev), "size"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	return n * 512, nil
}

// LoopInfo is an attached loop device and the file behind it.
type LoopInfo struct {
	Device       string // /dev/loopN
	Major, Minor uint32 // the device's own number: the MAJ:MIN of its mounts in mountinfo
	// BackingFile is the path sysfs shows, without the " (deleted)" the
	// kernel appends once the file has been unlinked (Deleted).
	BackingFile string
	Deleted     bool
	// Inode and Dev identify the backing file (LOOP_GET_STATUS64's
	// lo_inode and lo_device): a file replaced at the same path is another
	// inode, which the path alone cannot tell.
	Inode uint64
	Dev   uint64
	// AutoClear: the kernel detaches the device when its last user
	// closes it (LOOP_CLR_FD on a device still in use sets it).
	AutoClear bool
}

// ErrLoopNotAttached: the loop device has no backing file.
var ErrLoopNotAttached = errors.New("loop device not attached")

const deletedSuffix = " (deleted)"

// Backs reports whether li's backing file is the file st describes.
func (li LoopInfo) Backs(st *unix.Stat_t) bool {
	return !li.Deleted && li.Inode == st.Ino && li.Dev == uint64(st.Dev)
}

// LoopStatus returns what the kernel says of the loop device dev
// (/dev/loopN or loopN): sysfs for its number and backing path,
// LOOP_GET_STATUS64 for the backing file's inode and device.
func LoopStatus(dev string) (LoopInfo, error) {
	name := filepath.Base(dev)
	bf, ok := LoopBackingFile(name)
	if !ok {
		return LoopInfo{}, fmt.Errorf("%s: %w", dev, ErrLoopNotAttached)
	}
	li := LoopInfo{Device: "/dev/" + name}
	li.BackingFile, li.Deleted = strings.CutSuffix(bf, deletedSuffix)
	b, err := os.ReadFile(filepath.Join(SysBlockDir, name, "dev"))
	if err != nil {
		return LoopInfo{}, err
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	a, err1 := strconv.ParseUint(maj, 10, 32)
	c, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return LoopInfo{}, fmt.Errorf("%s: bad device number %q", dev, b)
	}
	li.Major, li.Minor = uint32(a), uint32(c)
	f, err := os.OpenFile(li.Device, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return LoopInfo{}, err
	}
	defer f.Close()
	st, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return LoopInfo{}, fmt.Errorf("%s: %w", dev, ErrLoopNotAttached)
	}
	if err != nil {
		return LoopInfo{}, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", li.Device, err)
	}
	li.Inode, li.Dev = st.Inode, st.Device
	li.AutoClear = st.Flags&unix.LO_FLAGS_AUTOCLEAR != 0
	return li, nil
}

// LoopDevices lists every attached loop device. One detached meanwhile is
// left out.
func LoopDevices() ([]LoopInfo, error) {
	ents, err := os.ReadDir(SysBlockDir)
	if err != nil {
		return nil, err
	}
	var out []LoopInfo
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		if _, ok := LoopBackingFile(e.Name()); !ok {
			continue
		}
		li, err := LoopStatus(e.Name())
		if errors.Is(err, ErrLoopNotAttached) || errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, li)
	}
	return out, nil
}
