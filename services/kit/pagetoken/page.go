package pagetoken

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The fields every List request has (the contract conventions): how big a
// page is and where it starts. A page token is bound to the rest.
const (
	pageSizeField  protoreflect.Name = "page_size"
	pageTokenField protoreflect.Name = "page_token"
)

// Filter is what of req a page token is bound to: req without its
// page_size and page_token, so that the pages of one listing may differ in
// size but not in filter.
func Filter(req proto.Message) proto.Message {
	f := proto.Clone(req)
	m := f.ProtoReflect()
	for _, name := range []protoreflect.Name{pageSizeField, pageTokenField} {
		if fd := m.Descriptor().Fields().ByName(name); fd != nil {
			m.Clear(fd)
		}
	}
	return f
}

// EncodeFor returns the token of the page of req that starts after cursor.
func (r *Keyring) EncodeFor(req proto.Message, cursor []byte) (string, error) {
	return r.Encode(Filter(req), cursor)
}

// DecodeFor returns the cursor of token, if it was made for a request
// with the same filter as req (ErrInvalid otherwise).
func (r *Keyring) DecodeFor(req proto.Message, token string) ([]byte, error) {
	return r.Decode(token, Filter(req))
}

// Page runs one keyset-paginated query: fetch is asked for one row more
// than pageSize, which says whether another page follows without a count;
// the rows of the page are returned, and when another page follows, next's
// token for the page after the last of them ("" on the last page).
func Page[T any](pageSize int, fetch func(limit int) ([]T, error), next func(last T) (string, error)) ([]T, string, error) {
	rows, err := fetch(pageSize + 1)
	if err != nil || len(rows) <= pageSize {
		return rows, "", err
	}
	rows = rows[:pageSize]
	token, err := next(rows[len(rows)-1])
	if err != nil {
		return nil, "", err
	}
	return rows, token, nil
}
