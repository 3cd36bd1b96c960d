package node

import (
	"maps"
	"os"
	"testing"
)

func TestParseLoadavgTasks(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0.11 0.60 0.79 1/93 19873\n", 93, false},
		{"1.36 3.49 4.53 2/3518 3715089", 3518, false},
		{"0.11 0.60 0.79", 0, true},
		{"0.11 0.60 0.79 93 1", 0, true},
		{"0.11 0.60 0.79 1/x 1", 0, true},
	}
	for _, tt := range tests {
		got, err := parseLoadavgTasks(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseLoadavgTasks(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseOSRelease(t *testing.T) {
	in := `# comment
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME='Debian'
ID=debian
VERSION="12 (\"bookworm\")"

`
	got := parseOSRelease(in)
	want := map[string]string{
		"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
		"NAME":        "Debian",
		"ID":          "debian",
		"VERSION":     `12 ("bookworm")`,
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseHugePageDir(t *testing.T) {
	tests := []struct {
		in     string
		wantKB uint64
		wantOK bool
	}{
		{"hugepages-2048kB", 2048, true},
		{"hugepages-1048576kB", 1048576, true},
		{"hugepages-0kB", 0, false},
		{"hugepages-2048", 0, false},
		{"something-else", 0, false},
	}
	for _, tt := range tests {
		kb, ok := parseHugePageDir(tt.in)
		if kb != tt.wantKB || ok != tt.wantOK {
			t.Errorf("parseHugePageDir(%q) = %d, %v; want %d, %v", tt.in, kb, ok, tt.wantKB, tt.wantOK)
		}
	}
}

// TestReadMachine reads this host: a smoke test that the files exist where
// we look and that nothing the status needs comes back empty.
func TestReadMachine(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc")
	}
	m, err := readMachine(t.TempDir())
	if err != nil {
		t.Logf("partial read: %v", err)
	}
	if m.NumCPU == 0 || m.MemTotal == 0 || m.MemAvailable == 0 || m.FSTotal == 0 || m.PIDMax == 0 || m.PIDCount == 0 ||
		m.BootID == "" || m.KernelVersion == "" || m.OSImage == "" {
		t.Errorf("incomplete reading: %+v", m)
	}
	if c := capacity(nil, m, 110); len(c) < 4 {
		t.Errorf("capacity from this host = %v", c)
	}
}
