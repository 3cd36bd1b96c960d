package volumes

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestHostPathTypeChecks(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	missing := filepath.Join(dir, "missing")
	blk := ""
	if isBlockDevice("/dev/loop0") {
		blk = "/dev/loop0"
	}
	ty := func(t v1.HostPathType) *v1.HostPathType { return &t }
	cases := []struct {
		path string
		typ  *v1.HostPathType
		ok   bool
	}{
		{missing, nil, true},
		{missing, ty(v1.HostPathUnset), true},
		{dir, ty(v1.HostPathDirectory), true},
		{file, ty(v1.HostPathDirectory), false},
		{missing, ty(v1.HostPathDirectory), false},
		{file, ty(v1.HostPathFile), true},
		{dir, ty(v1.HostPathFile), false},
		{sock, ty(v1.HostPathSocket), true},
		{file, ty(v1.HostPathSocket), false},
		{"/dev/null", ty(v1.HostPathCharDev), true},
		{file, ty(v1.HostPathCharDev), false},
		{"/dev/null", ty(v1.HostPathBlockDev), false},
		{file, ty(v1.HostPathBlockDev), false},
		{filepath.Join(dir, "new/dir"), ty(v1.HostPathDirectoryOrCreate), true},
		{file, ty(v1.HostPathDirectoryOrCreate), false},
		{filepath.Join(dir, "newfile"), ty(v1.HostPathFileOrCreate), true},
		{dir, ty(v1.HostPathFileOrCreate), false},
		{filepath.Join(dir, "noparent/f"), ty(v1.HostPathFileOrCreate), false},
		{file, ty("Bogus"), false},
	}
	if blk != "" {
		cases = append(cases, struct {
			path string
			typ  *v1.HostPathType
			ok   bool
		}{blk, ty(v1.HostPathBlockDev), true})
	}
	for _, tc := range cases {
		name := "unset"
		if tc.typ != nil {
			name = string(*tc.typ)
		}
		t.Run(name+":"+filepath.Base(tc.path), func(t *testing.T) {
			err := checkHostPathType(tc.path, tc.typ)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if st, err := os.Stat(filepath.Join(dir, "new/dir")); err != nil || !st.IsDir() {
		t.Error("DirectoryOrCreate did not create the directory")
	}
	if st, err := os.Stat(filepath.Join(dir, "newfile")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o600 != 0o600 {
		t.Error("FileOrCreate did not create the file")
	}
}
