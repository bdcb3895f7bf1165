// Package images builds the container images of the platforma services
// without a Docker daemon or a base image, and checks what it built.
//
// An image holds the service's static binary at /<service> and an empty
// /tmp, and a config that runs it as a non-root user. Everything that goes
// into the image is derived from the binary and the flags, with fixed
// timestamps, so the same binary always gives the same image digest.
package images

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// Binary is what the image needs to know about a service binary.
type Binary struct {
	Path string
	// Arch is the GOARCH the binary runs on: the image's architecture.
	Arch string
	// SHA256 is the hex digest of the file's bytes.
	SHA256 string
	Size   int64
}

// ErrNotStatic marks a binary that needs a dynamic loader or shared
// libraries: the images have no libc and no loader, so such a binary
// could not even start there ("no such file or directory" for its
// interpreter). `make build` produces exactly such binaries on a machine
// with a C compiler, which is why the images are built with CGO_ENABLED=0.
var ErrNotStatic = errors.New("binary is dynamically linked")

// elfArch maps the ELF machines the platform ships to GOARCH names.
var elfArch = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
}

// ReadBinary reads path, refusing anything but a static 64-bit
// little-endian Linux executable for amd64 or arm64.
func ReadBinary(path string) (*Binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	arch, err := inspectELF(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Binary{Path: path, Arch: arch, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// inspectELF returns the binary's GOARCH after checking it can run alone in
// an empty image.
func inspectELF(r io.ReaderAt) (string, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()

	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		return "", fmt.Errorf("not a 64-bit little-endian ELF file (%v, %v)", f.Class, f.Data)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("not an executable (ELF type %v)", f.Type)
	}
	// Go binaries say ELFOSABI_NONE ("System V"); anything else is meant
	// for another kernel.
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", fmt.Errorf("not a Linux binary (OS ABI %v)", f.OSABI)
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return "", fmt.Errorf("unsupported machine %v: the images are built for amd64 and arm64", f.Machine)
	}

	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(io.LimitReader(p.Open(), 4096))
			return "", fmt.Errorf("%w: it asks for the loader %q (build it with CGO_ENABLED=0)", ErrNotStatic, trimNUL(interp))
		}
	}
	// A static PIE has a dynamic section but needs no library; what cannot
	// run without libc is a DT_NEEDED entry. Stripped section headers
	// leave nothing to read, which is fine: no PT_INTERP means nothing
	// would load those libraries anyway.
	// DynString returns (nil, nil) without a dynamic section and fails
	// only on a malformed one.
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return "", fmt.Errorf("reading the dynamic section: %w", err)
	}
	if len(needed) > 0 {
		return "", fmt.Errorf("%w: it needs the shared libraries %v (build it with CGO_ENABLED=0)", ErrNotStatic, needed)
	}
	return arch, nil
}

func trimNUL(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
