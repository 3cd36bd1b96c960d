package stats

import (
	"reflect"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{{
		name: "kernel 6.18",
		in: "cpu  663192 25 269934 2909440 14532 0 12914 698 0 0\n" +
			"cpu0 328228 11 129791 1467846 4369 0 4458 329 0 0\n" +
			"intr 123 0 0\nctxt 999\nbtime 1763900000\nprocesses 4242\n",
		// user+nice+system+irq+softirq = 663192+25+269934+0+12914 ticks of 10 ms
		want: procStat{CPUNanos: 946065 * 10_000_000, HaveCPU: true, BootTime: time.Unix(1763900000, 0)},
	}, {
		name: "guest and steal are not added",
		in:   "cpu  100 0 50 1000 0 5 5 999 40 0\nbtime 1\n",
		want: procStat{CPUNanos: 160 * 10_000_000, HaveCPU: true, BootTime: time.Unix(1, 0)},
	}, {
		name: "old kernel with 8 columns",
		in:   "cpu  1 2 3 4 5 6 7\nbtime 2\n",
		want: procStat{CPUNanos: (1 + 2 + 3 + 6 + 7) * 10_000_000, HaveCPU: true, BootTime: time.Unix(2, 0)},
	}, {
		name: "no btime", in: "cpu  1 2 3 4 5 6 7 8\n", wantErr: true,
	}, {
		name: "no cpu line", in: "btime 5\n", wantErr: true,
	}, {
		name: "garbage column", in: "cpu  1 x 3 4 5 6 7 8\nbtime 5\n", wantErr: true,
	}, {
		name: "short cpu line", in: "cpu  1 2 3\nbtime 5\n", wantErr: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseFlatKeyed(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[string]uint64
	}{{
		name: "memory.stat v1",
		in:   "cache 12500992\nrss 5476352\ntotal_inactive_file 1709334528\ntotal_pgfault 344319702\n",
		want: map[string]uint64{"cache": 12500992, "rss": 5476352, "total_inactive_file": 1709334528, "total_pgfault": 344319702},
	}, {
		name: "bad lines are skipped",
		in:   "a 1\nb\nc x\nd 2 3\ne 4",
		want: map[string]uint64{"a": 1, "e": 4},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseFlatKeyed([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

const netDevFixture = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 123456789 98765 1 2 0 0 0 0 987654321 56789 3 4 0 0 0 0
vethab12cd: 5 6 7 8 0 0 0 0 9 10 11 12 0 0 0 0
`

func TestParseNetDev(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    []netDev
		wantErr bool
	}{{
		name: "three interfaces",
		in:   netDevFixture,
		want: []netDev{
			{Name: "lo", RxBytes: 1000, RxPackets: 10, TxBytes: 1000, TxPackets: 10},
			{Name: "eth0", RxBytes: 123456789, RxPackets: 98765, RxErrors: 1, RxDrops: 2, TxBytes: 987654321, TxPackets: 56789, TxErrors: 3, TxDrops: 4},
			{Name: "vethab12cd", RxBytes: 5, RxPackets: 6, RxErrors: 7, RxDrops: 8, TxBytes: 9, TxPackets: 10, TxErrors: 11, TxDrops: 12},
		},
	}, {
		name: "headers only", in: "Inter-| a\n face |b\n", want: nil,
	}, {
		name: "short line", in: "eth0: 1 2 3\n", wantErr: true,
	}, {
		name: "bad number", in: "eth0: 1 2 3 4 5 6 7 8 9 x 11 12 13 14 15 16\n", wantErr: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNetDev([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseLoadavgTasks(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1.36 3.49 4.53 2/3518 3715089\n", want: 3518},
		{in: "0.00 0.01 0.05 1/97 1234", want: 97},
		{in: "0.00 0.01 0.05 97 1234", wantErr: true},
		{in: "0.00 0.01", wantErr: true},
		{in: "0.00 0.01 0.05 1/x 1234", wantErr: true},
	} {
		got, err := parseLoadavgTasks([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseLoadavgTasks(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
