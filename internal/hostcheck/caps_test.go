package hostcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMissingCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         []string // substrings, one per line
		wantErr      string
	}{
		{name: "all there", status: "Name:\tx\nCapEff:\t000001ffffffffff\n"},
		{name: "CAP_SYS_RESOURCE withheld (this machine kind)", status: "CapInh:\t0\nCapEff:\t000001fffeffffff\n",
			want: []string{"CAP_SYS_RESOURCE missing (CapEff 000001fffeffffff)"}},
		{name: "no CapEff", status: "Name:\tx\n", wantErr: "no CapEff line"},
		{name: "garbage", status: "CapEff:\tzz\n", wantErr: `CapEff "zz"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "status")
			if err := os.WriteFile(p, []byte(tc.status), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := MissingCapabilities(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %q, %v; want %d lines", got, err, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("line %q, want it to contain %q", got[i], w)
				}
			}
		})
	}
}
