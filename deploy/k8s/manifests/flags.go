package manifests

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// Flag is one flag a binary's command accepts, read from its Go source.
type Flag struct {
	Name string
	// Default is the default value's Go expression, as written.
	Default ast.Expr
}

// FlagSource is a function that registers flags, and who gets them.
type FlagSource struct {
	// File is relative to the repository's root.
	File string
	// Func is the function's name, with its receiver's type for a method:
	// "(*serveConfig).register", "RegisterFlags".
	Func string
	// Services get the flags ("" for all); Commands are the commands that
	// parse them.
	Services []string
	Commands []string
}

// Flags are the flags of each service's commands: service → command →
// flag name → Flag.
type Flags map[string]map[string]map[string]Flag

// ReadFlags reads the flags each source registers from the repository at
// root, without importing it (deploy/k8s is a module of its own). Only calls
// on a *flag.FlagSet named fs with a string literal name are understood;
// a source that registers none of those is an error, so a refactoring of
// the binaries makes the caller update its sources rather than silently
// check nothing.
func ReadFlags(root string, services []string, sources []FlagSource) (Flags, error) {
	out := Flags{}
	for _, svc := range services {
		out[svc] = map[string]map[string]Flag{}
	}
	var errs []error
	fset := token.NewFileSet()
	for _, src := range sources {
		f, err := parser.ParseFile(fset, filepath.Join(root, src.File), nil, parser.SkipObjectResolution)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fn := findFunc(f, src.Func)
		if fn == nil {
			errs = append(errs, fmt.Errorf("%s: no function %s", src.File, src.Func))
			continue
		}
		flags, err := registered(fn)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", src.File, src.Func, err))
			continue
		}
		if len(flags) == 0 {
			errs = append(errs, fmt.Errorf("%s %s registers no flag this reader understands", src.File, src.Func))
			continue
		}
		svcs := src.Services
		if len(svcs) == 0 {
			svcs = services
		}
		for _, svc := range svcs {
			if out[svc] == nil {
				errs = append(errs, fmt.Errorf("%s %s: unknown service %q", src.File, src.Func, svc))
				continue
			}
			for _, cmd := range src.Commands {
				if out[svc][cmd] == nil {
					out[svc][cmd] = map[string]Flag{}
				}
				for _, fl := range flags {
					out[svc][cmd][fl.Name] = fl
				}
			}
		}
	}
	return out, errors.Join(errs...)
}

// Names are the flag names of a service's command, sorted.
func (f Flags) Names(svc, cmd string) []string {
	var names []string
	for n := range f[svc][cmd] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func findFunc(f *ast.File, name string) *ast.FuncDecl {
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		if funcName(fn) == name {
			return fn
		}
	}
	return nil
}

func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	switch t := fn.Recv.List[0].Type.(type) {
	case *ast.StarExpr:
		if id, ok := t.X.(*ast.Ident); ok {
			return "(*" + id.Name + ")." + fn.Name.Name
		}
	case *ast.Ident:
		return "(" + t.Name + ")." + fn.Name.Name
	}
	return fn.Name.Name
}

// registered finds fs.XxxVar(&v, "name", default, usage), fs.Var(v,
// "name", usage) and fs.Xxx("name", default, usage) calls.
func registered(fn *ast.FuncDecl) ([]Flag, error) {
	var flags []Flag
	var err error
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || err != nil {
			return err == nil
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if recv, ok := sel.X.(*ast.Ident); !ok || recv.Name != "fs" {
			return true
		}
		nameArg, defArg := -1, -1
		switch m := sel.Sel.Name; m {
		case "StringVar", "IntVar", "Int64Var", "UintVar", "Uint64Var", "BoolVar", "DurationVar", "Float64Var":
			nameArg, defArg = 1, 2
		case "Var", "TextVar", "Func", "BoolFunc":
			nameArg = 1
			if m == "Func" || m == "BoolFunc" {
				nameArg = 0
			}
		case "String", "Int", "Int64", "Uint", "Uint64", "Bool", "Duration", "Float64":
			nameArg, defArg = 0, 1
		default:
			return true // Parse, Lookup, ...
		}
		if nameArg >= len(call.Args) {
			err = fmt.Errorf("fs.%s with too few arguments", sel.Sel.Name)
			return false
		}
		lit, ok := call.Args[nameArg].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			err = fmt.Errorf("fs.%s whose name is not a string literal", sel.Sel.Name)
			return false
		}
		name, uerr := strconv.Unquote(lit.Value)
		if uerr != nil {
			err = uerr
			return false
		}
		fl := Flag{Name: name}
		if defArg >= 0 && defArg < len(call.Args) {
			fl.Default = call.Args[defArg]
		}
		flags = append(flags, fl)
		return true
	})
	return flags, err
}

// DurationDefault evaluates a flag's default when it is a constant
// duration written as the code does: 30 * time.Second, time.Minute, 2 *
// time.Hour, or a literal number of nanoseconds.
func (fl Flag) DurationDefault() (time.Duration, error) {
	d, err := evalDuration(fl.Default)
	if err != nil {
		return 0, fmt.Errorf("the default of -%s: %w", fl.Name, err)
	}
	return d, nil
}

func evalDuration(e ast.Expr) (time.Duration, error) {
	units := map[string]time.Duration{
		"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
		"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
	}
	switch t := e.(type) {
	case *ast.ParenExpr:
		return evalDuration(t.X)
	case *ast.BasicLit:
		if t.Kind != token.INT {
			break
		}
		n, err := strconv.ParseInt(t.Value, 0, 64)
		return time.Duration(n), err
	case *ast.SelectorExpr:
		if pkg, ok := t.X.(*ast.Ident); ok && pkg.Name == "time" {
			if u, ok := units[t.Sel.Name]; ok {
				return u, nil
			}
		}
	case *ast.BinaryExpr:
		if t.Op != token.MUL {
			break
		}
		a, err := evalDuration(t.X)
		if err != nil {
			return 0, err
		}
		b, err := evalDuration(t.Y)
		if err != nil {
			return 0, err
		}
		return a * b, nil
	}
	return 0, fmt.Errorf("cannot evaluate %T as a constant duration", e)
}

// IntDefault evaluates a flag's default when it is an integer literal.
func (fl Flag) IntDefault() (int, error) {
	lit, ok := fl.Default.(*ast.BasicLit)
	if !ok || lit.Kind != token.INT {
		return 0, fmt.Errorf("the default of -%s is not an integer literal", fl.Name)
	}
	n, err := strconv.ParseInt(lit.Value, 0, 64)
	return int(n), err
}
