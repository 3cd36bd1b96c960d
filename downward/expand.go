package downward

import "strings"

// The $(VAR) syntax of command, args, env values and subPathExpr, with the
// semantics of the kubelet's third_party/forked/golang/expansion (re-written
// here: it is not in a library module):
//
//   - $(VAR) is replaced by mapping(VAR);
//   - $$ is an escaped $: $$(VAR) gives the literal $(VAR);
//   - a $ followed by anything else, or an unclosed $(, is kept literally.
//
// MappingFor gives the mapping of command, args and env values, which leaves
// an undefined $(VAR) as written; subPathExpr uses its own, which records the
// undefined names (volumes/).

// MappingFor returns a mapping that looks a name up in each context in
// turn; an unknown name maps to its own $(name) reference.
func MappingFor(contexts ...map[string]string) func(string) string {
	return func(name string) string {
		for _, vars := range contexts {
			if v, ok := vars[name]; ok {
				return v
			}
		}
		return "$(" + name + ")"
	}
}

// Expand replaces the variable references of input using mapping.
func Expand(input string, mapping func(string) string) string {
	var buf strings.Builder
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] == '$' && cursor+1 < len(input) {
			buf.WriteString(input[checkpoint:cursor])
			read, isVar, advance := tryReadVariableName(input[cursor+1:])
			if isVar {
				buf.WriteString(mapping(read))
			} else {
				buf.WriteString(read)
			}
			cursor += advance
			checkpoint = cursor + 1
		}
	}
	buf.WriteString(input[checkpoint:])
	return buf.String()
}

// tryReadVariableName reads what follows a '$': the variable name (isVar),
// or the literal text to emit; advance is how many bytes were consumed.
func tryReadVariableName(input string) (read string, isVar bool, advance int) {
	switch input[0] {
	case '$':
		return "$", false, 1
	case '(':
		for i := 1; i < len(input); i++ {
			if input[i] == ')' {
				return input[1:i], true, i + 1
			}
		}
		return "$(", false, 1
	default:
		return "$" + input[:1], false, 1
	}
}
