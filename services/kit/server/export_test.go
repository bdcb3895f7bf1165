package server

// Test hooks.

// LevelForCode is levelForCode.
var LevelForCode = levelForCode

// PendingDecodeErrors is how many decoding errors wait to be taken: zero
// between calls, or something leaks.
func (s *Server) PendingDecodeErrors() int64 { return s.guard.pending.Load() }
