package imagegc

import (
	"os"

	"golang.org/x/sys/unix"
)

// statfs reads the size of the filesystem holding path. Available is what
// an unprivileged writer may still use (f_bavail), as cAdvisor reports it
// to the kubelet.
func statfs(path string) (fsSize, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fsSize{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := uint64(st.Bsize)
	return fsSize{Capacity: st.Blocks * bs, Available: st.Bavail * bs}, nil
}
