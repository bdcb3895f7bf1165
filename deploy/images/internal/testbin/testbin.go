// Package testbin gives the tests of this module the binaries they build
// images from, without `make build`: a stand-in service built with
// CGO_ENABLED=0 (static, like the real images' binaries), and crafted ELF
// files for the cases a Go build cannot produce on every machine.
package testbin

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	fakeOnce sync.Once
	fakeDir  string
	fakeErr  error
	fakeOut  []byte
)

// FakeService returns the path of testdata/fakesvc built as a static
// binary for this machine's architecture, named "fakesvc", so an image
// platforma/fakesvc:<tag> holds it at /fakesvc. It is built once per test
// process (see Main); callers must not change the file.
func FakeService(t testing.TB) string {
	t.Helper()
	fakeOnce.Do(func() {
		fakeDir, fakeErr = os.MkdirTemp("", "fakesvc-")
		if fakeErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=",
			"-o", filepath.Join(fakeDir, "fakesvc"),
			"github.com/platforma/platforma/deploy/images/testdata/fakesvc")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
		fakeOut, fakeErr = cmd.CombinedOutput()
	})
	if fakeErr != nil {
		t.Fatalf("building the fake service: %v\n%s", fakeErr, fakeOut)
	}
	return filepath.Join(fakeDir, "fakesvc")
}

// Main runs a test package's tests, then removes what FakeService built;
// call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

// Copy copies src to dir/name with mode 0755 and returns the new path.
func Copy(t testing.TB, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// ELF describes a crafted ELF file: only the parts the images package
// reads. Zero values give a static little-endian 64-bit Linux executable.
type ELF struct {
	Class   elf.Class   // default ELFCLASS64
	Data    elf.Data    // default ELFDATA2LSB
	OSABI   elf.OSABI   // default ELFOSABI_NONE, what Go writes
	Type    elf.Type    // default ET_EXEC
	Machine elf.Machine // default EM_X86_64
	// Interp, if set, adds a PT_INTERP program header naming this loader.
	Interp string
	// Needed, if set, adds a dynamic section with these DT_NEEDED
	// libraries (and no PT_INTERP unless Interp is set too).
	Needed []string
}

// Bytes lays the file out: header, program headers, their data, then the
// section headers. The result parses with debug/elf but runs nowhere.
func (e ELF) Bytes() []byte {
	if e.Class == 0 {
		e.Class = elf.ELFCLASS64
	}
	if e.Data == 0 {
		e.Data = elf.ELFDATA2LSB
	}
	if e.Type == 0 {
		e.Type = elf.ET_EXEC
	}
	if e.Machine == 0 {
		e.Machine = elf.EM_X86_64
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if e.Data == elf.ELFDATA2MSB {
		bo = binary.BigEndian
	}
	const ehsize, phsize, shsize = 64, 56, 64

	var progs []elf.Prog64
	var data bytes.Buffer
	nprogs := 0
	if e.Interp != "" {
		nprogs = 1
	}
	dataOff := uint64(ehsize + phsize*nprogs)
	if e.Interp != "" {
		interp := append([]byte(e.Interp), 0)
		progs = append(progs, elf.Prog64{
			Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R),
			Off: dataOff, Filesz: uint64(len(interp)), Memsz: uint64(len(interp)), Align: 1,
		})
		data.Write(interp)
	}
	var sections []elf.Section64
	if len(e.Needed) > 0 {
		// [0] the null section, [1] .dynstr, [2] .dynamic linked to it.
		var strtab bytes.Buffer
		strtab.WriteByte(0)
		var dyn bytes.Buffer
		for _, lib := range e.Needed {
			off := strtab.Len()
			strtab.WriteString(lib)
			strtab.WriteByte(0)
			binary.Write(&dyn, bo, elf.Dyn64{Tag: int64(elf.DT_NEEDED), Val: uint64(off)})
		}
		binary.Write(&dyn, bo, elf.Dyn64{Tag: int64(elf.DT_NULL)})
		strOff := dataOff + uint64(data.Len())
		data.Write(strtab.Bytes())
		dynOff := dataOff + uint64(data.Len())
		data.Write(dyn.Bytes())
		sections = []elf.Section64{
			{},
			{Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(strtab.Len()), Addralign: 1},
			{Type: uint32(elf.SHT_DYNAMIC), Off: dynOff, Size: uint64(dyn.Len()), Link: 1, Entsize: 16, Addralign: 8},
		}
	}
	for data.Len()%8 != 0 {
		data.WriteByte(0)
	}
	shoff := uint64(0)
	if len(sections) > 0 {
		shoff = dataOff + uint64(data.Len())
	}
	var phoff uint64
	if len(progs) > 0 {
		phoff = ehsize
	}

	hdr := elf.Header64{
		Type: uint16(e.Type), Machine: uint16(e.Machine), Version: uint32(elf.EV_CURRENT),
		Phoff: phoff, Shoff: shoff, Ehsize: ehsize,
		Phentsize: phsize, Phnum: uint16(len(progs)),
		Shentsize: shsize, Shnum: uint16(len(sections)),
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(e.Class)
	hdr.Ident[elf.EI_DATA] = byte(e.Data)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	hdr.Ident[elf.EI_OSABI] = byte(e.OSABI)

	var out bytes.Buffer
	binary.Write(&out, bo, hdr)
	for _, p := range progs {
		binary.Write(&out, bo, p)
	}
	out.Write(data.Bytes())
	for _, s := range sections {
		binary.Write(&out, bo, s)
	}
	return out.Bytes()
}

// Write writes the crafted file to dir/name, executable, and returns its path.
func (e ELF) Write(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, e.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
