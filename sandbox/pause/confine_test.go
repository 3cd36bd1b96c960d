package pause

import (
	"reflect"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    *confinement
		wantErr bool
	}{
		{args: nil, want: nil},
		{args: []string{"-root", "/r", "-user", "65535:65535"}, want: &confinement{root: "/r", uid: 65535, gid: 65535}},
		{args: []string{"-root", "/r", "-user", "0:0", "-groups", "1,2"}, want: &confinement{root: "/r", uid: 0, gid: 0, groups: []int{1, 2}}},
		{args: []string{"-root", "/r", "-user", "1:2", "-ready-fd", "3"}, want: &confinement{root: "/r", uid: 1, gid: 2, readyFD: 3}},
		{args: []string{"-root", "/r", "-user", "1:2", "-ready-fd", "1"}, wantErr: true},
		{args: []string{"-root", "/r"}, wantErr: true},
		{args: []string{"-user", "1:1"}, wantErr: true},
		{args: []string{"-root", "/r", "-user", "1"}, wantErr: true},
		{args: []string{"-root", "/r", "-user", "-1:0"}, wantErr: true},
		{args: []string{"-root", "/r", "-user", "1:1", "-groups", "a"}, wantErr: true},
		{args: []string{"-root"}, wantErr: true},
		{args: []string{"-bogus", "x"}, wantErr: true},
	} {
		got, err := parseArgs(tc.args)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseArgs(%q): err %v, wantErr %v", tc.args, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseArgs(%q) = %+v, want %+v", tc.args, got, tc.want)
		}
	}
}
