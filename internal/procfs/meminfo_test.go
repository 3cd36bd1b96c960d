package procfs

import (
	"reflect"
	"testing"
)

func TestParseMeminfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[string]uint64
	}{{
		name: "typical",
		in: "MemTotal:        8029412 kB\nMemFree:          512000 kB\nMemAvailable:    6000000 kB\n" +
			"Inactive(file):   100 kB\nHugePages_Total:       2\nSwapTotal:             0 kB\n",
		want: map[string]uint64{"MemTotal": 8029412 * 1024, "MemFree": 512000 * 1024, "MemAvailable": 6000000 * 1024,
			"Inactive(file)": 100 * 1024, "HugePages_Total": 2, "SwapTotal": 0},
	}, {
		name: "junk lines are skipped",
		in:   "no colon here\nBad:   x kB\nEmpty:\nGood: 1 kB\n",
		want: map[string]uint64{"Good": 1024},
	}, {
		name: "empty", in: "", want: map[string]uint64{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseMeminfo([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
