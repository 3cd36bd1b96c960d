package failpoint

import (
	"testing"
)

func TestEval(t *testing.T) {
	tests := []struct {
		expr      string
		wantFails []string // messages of successive evaluations ("" = pass)
		wantLeft  string
	}{
		{"", []string{"", ""}, ""},
		{"off", []string{"", ""}, "off"},
		{"1*error(oops)", []string{"oops", "", ""}, ""},
		{"2*error(busy)", []string{"busy", "busy", ""}, ""},
		{"error(always)", []string{"always", "always"}, "error(always)"},
		{"1*off->1*error(second)", []string{"", "second", ""}, ""},
		{"1*error(a)->error(b)", []string{"a", "b", "b"}, "error(b)"},
		{"error()", []string{"failpoint"}, "error(failpoint)"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			expr := tt.expr
			for i, want := range tt.wantFails {
				fail, left, err := Eval(expr)
				if err != nil {
					t.Fatal(err)
				}
				if fail != want {
					t.Fatalf("evaluation %d: fail = %q, want %q", i, fail, want)
				}
				expr = left
			}
			if expr != tt.wantLeft {
				t.Errorf("left = %q, want %q", expr, tt.wantLeft)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, expr := range []string{"0*error(x)", "x*off", "panic", "1*", "error(x"} {
		if _, err := Parse(expr); err == nil {
			t.Errorf("Parse(%q) = nil error", expr)
		}
	}
}

func TestEvaluateFile(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "pod-a", Control{CmdAdd: "1*error(add)", CmdDel: "2*error(del)"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		keys []string
		cmd  string
		want string
	}{
		{[]string{"nope"}, "ADD", ""},
		{[]string{"pod-a", "id"}, "ADD", "add"},
		{[]string{"pod-a"}, "ADD", ""},
		{[]string{"", "pod-a"}, "DEL", "del"},
		{[]string{"pod-a"}, "DEL", "del"},
		{[]string{"pod-a"}, "DEL", ""},
		{[]string{"pod-a"}, "CHECK", ""},
	}
	for i, s := range steps {
		got, err := Evaluate(dir, s.keys, s.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if got != s.want {
			t.Fatalf("step %d (%s %v): %q, want %q", i, s.cmd, s.keys, got, s.want)
		}
	}
}
