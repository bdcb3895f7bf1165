package images

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/platforma/platforma/deploy/images/internal/testbin"
)

func TestReadBinaryELF(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name      string
		elf       testbin.ELF
		wantArch  string
		wantErr   string
		notStatic bool
	}{
		{name: "static amd64", elf: testbin.ELF{}, wantArch: "amd64"},
		{name: "static arm64", elf: testbin.ELF{Machine: elf.EM_AARCH64}, wantArch: "arm64"},
		// A static PIE is ET_DYN without a loader: it runs in an empty image.
		{name: "static pie", elf: testbin.ELF{Type: elf.ET_DYN}, wantArch: "amd64"},
		{name: "linux osabi", elf: testbin.ELF{OSABI: elf.ELFOSABI_LINUX}, wantArch: "amd64"},
		{name: "loader", elf: testbin.ELF{Interp: "/lib64/ld-linux-x86-64.so.2"}, wantErr: `loader "/lib64/ld-linux-x86-64.so.2"`, notStatic: true},
		{name: "libraries without loader", elf: testbin.ELF{Needed: []string{"libc.so.6", "libpthread.so.0"}}, wantErr: "[libc.so.6 libpthread.so.0]", notStatic: true},
		{name: "loader and libraries", elf: testbin.ELF{Interp: "/lib/ld-musl-x86_64.so.1", Needed: []string{"libc.musl-x86_64.so.1"}}, wantErr: "ld-musl", notStatic: true},
		{name: "riscv", elf: testbin.ELF{Machine: elf.EM_RISCV}, wantErr: "unsupported machine EM_RISCV"},
		{name: "32-bit", elf: testbin.ELF{Class: elf.ELFCLASS32, Machine: elf.EM_386}, wantErr: "not a 64-bit little-endian ELF file (ELFCLASS32"},
		{name: "big endian", elf: testbin.ELF{Data: elf.ELFDATA2MSB, Machine: elf.EM_AARCH64}, wantErr: "little-endian"},
		{name: "object file", elf: testbin.ELF{Type: elf.ET_REL}, wantErr: "not an executable"},
		{name: "freebsd", elf: testbin.ELF{OSABI: elf.ELFOSABI_FREEBSD}, wantErr: "not a Linux binary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.elf.Write(t, dir, strings.ReplaceAll(tc.name, " ", "-"))
			b, err := ReadBinary(p)
			if tc.wantArch != "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if b.Arch != tc.wantArch {
					t.Fatalf("arch %q, want %q", b.Arch, tc.wantArch)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %+v", b)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not say %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrNotStatic); got != tc.notStatic {
				t.Fatalf("errors.Is(ErrNotStatic) = %v for %v", got, err)
			}
		})
	}
}

func TestReadBinaryNotELF(t *testing.T) {
	p := t.TempDir() + "/script"
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBinary(p); err == nil || !strings.Contains(err.Error(), "not an ELF executable") {
		t.Fatalf("a shell script: %v", err)
	}
}

// The fake service is built like the images' binaries; ReadBinary must
// take it and report its architecture and digest.
func TestReadBinaryStaticGoBuild(t *testing.T) {
	p := testbin.FakeService(t)
	b, err := ReadBinary(p)
	if err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if b.Arch != runtime.GOARCH || b.SHA256 != hex.EncodeToString(sum[:]) || b.Size != int64(len(content)) {
		t.Fatalf("got %+v; want arch %s, sha256 %x, size %d", b, runtime.GOARCH, sum, len(content))
	}
}

// A real dynamically linked program from the machine, as `make build`
// produces on a machine with a C compiler. Which one exists varies, so the
// test looks for one whose PT_INTERP debug/elf itself sees.
func TestReadBinaryRefusesSystemDynamicBinary(t *testing.T) {
	for _, p := range []string{"/bin/true", "/usr/bin/true", "/bin/sh", "/usr/bin/env"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		dynamic := false
		for _, prog := range f.Progs {
			dynamic = dynamic || prog.Type == elf.PT_INTERP
		}
		f.Close()
		if !dynamic || (f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_AARCH64) {
			continue
		}
		_, err = ReadBinary(p)
		if !errors.Is(err, ErrNotStatic) {
			t.Fatalf("%s: got %v, want ErrNotStatic", p, err)
		}
		return
	}
	t.Skip("no dynamically linked amd64/arm64 program on this machine; the crafted cases in TestReadBinaryELF still ran")
}

func TestMain(m *testing.M) { testbin.Main(m) }
