// Per-session keypairs on disk: <sessions dir>/<meshSlug>/<sessionId>.json,
// 0600 in a 0700 directory, so that a relaunch, a --resume or a daemon
// restart keeps a session's pubkey. Shared by the daemon (which stores the
// key a client registers with) and launch (which loads or creates it).
//
// Policy: a keypair file is created once and never overwritten. Creation is
// atomic (temp file + hard link, which fails if the name exists), and when
// two processes race the loser reads back the winner's key. A file that is
// not a keypair (damaged, truncated, edited) does not hold a session hostage:
// launch moves it aside, keeping it, says so, and makes a new key.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// sessionKeyFile is the on-disk shape, as claudemesh writes it.
type sessionKeyFile struct {
	Version   int    `json:"version"`
	MeshSlug  string `json:"meshSlug"`
	SessionID string `json:"sessionId"`
	PublicKey string `json:"publicKey"`
	SecretKey string `json:"secretKey"`
	CreatedAt string `json:"createdAt"`
}

// safePathName reports whether a mesh slug or session id may be used as a
// path component: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (a loop, not a regexp:
// see charclass.go).
func safePathName(s string) bool {
	return matchesClass(s, 1, 128, isAlnumByte, orBytes(isAlnumByte, "._-"))
}

// loadSessionKeypair reads a stored session keypair; fs.ErrNotExist when
// there is none.
func loadSessionKeypair(path string) (Keypair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Keypair{}, err
	}
	var f sessionKeyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return Keypair{}, &badSessionKeyError{path: path, err: err}
	}
	kp, err := keypairFromHex(f.PublicKey, f.SecretKey)
	if err != nil {
		return Keypair{}, &badSessionKeyError{path: path, err: err}
	}
	return kp, nil
}

// badSessionKeyError is a session key file that holds no keypair.
type badSessionKeyError struct {
	path string
	err  error
}

func (e *badSessionKeyError) Error() string { return "session key " + e.path + ": " + e.err.Error() }
func (e *badSessionKeyError) Unwrap() error { return e.err }

// storeSessionKeypair writes kp at path unless a keypair is already there.
// It returns the keypair the file holds afterwards and whether it was
// written by this call.
func storeSessionKeypair(path, meshSlug, sessionID string, kp Keypair) (Keypair, bool, error) {
	if existing, err := loadSessionKeypair(path); err == nil {
		return existing, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Keypair{}, false, err
	}
	dir := filepath.Dir(path)
	if err := ensurePrivateDir(dir); err != nil {
		return Keypair{}, false, err
	}
	data, err := json.MarshalIndent(sessionKeyFile{
		Version: 1, MeshSlug: meshSlug, SessionID: sessionID,
		PublicKey: kp.PublicHex(), SecretKey: kp.SecretHex(),
		CreatedAt: time.Now().UTC().Format(time.RFC3339Nano),
	}, "", "  ")
	if err != nil {
		return Keypair{}, false, err
	}
	name, err := writeTempFile(dir, ".key-*.tmp", append(data, '\n'), 0o600)
	if err != nil {
		return Keypair{}, false, err
	}
	defer os.Remove(name)
	if err := os.Link(name, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Someone else created it first: theirs is the key.
			winner, lerr := loadSessionKeypair(path)
			return winner, false, lerr
		}
		return Keypair{}, false, err
	}
	return kp, true, nil
}

// loadOrCreateSessionKeypair returns the stored keypair, creating one if
// there is none.
func loadOrCreateSessionKeypair(path, meshSlug, sessionID string) (Keypair, bool, error) {
	if kp, err := loadSessionKeypair(path); err == nil {
		return kp, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Keypair{}, false, err
	}
	kp, err := newKeypair()
	if err != nil {
		return Keypair{}, false, err
	}
	return storeSessionKeypair(path, meshSlug, sessionID, kp)
}

// moveAsideBadSessionKey renames a session key file that holds no keypair
// to <name>.damaged-<unix ms>, so that a new key can take its place; it
// returns the new name, or "" when the file is fine or absent.
func moveAsideBadSessionKey(path string) (string, error) {
	_, err := loadSessionKeypair(path)
	var bad *badSessionKeyError
	if !errors.As(err, &bad) {
		return "", nil
	}
	aside := fmt.Sprintf("%s.damaged-%d", path, time.Now().UnixMilli())
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("moving the damaged session key aside: %w", err)
	}
	return aside, nil
}

// sessionPresence loads (or creates) a session's keypair in the sessions dir
// and signs a fresh attestation for it with the member key: the presence a
// launched session registers with (launch, and the demo's sessions).
func sessionPresence(paths Paths, mesh Mesh, member Keypair, sessionID string) (Keypair, *PresenceRegistration, error) {
	key, _, err := loadOrCreateSessionKeypair(paths.SessionKeyFile(mesh.Slug, sessionID), mesh.Slug, sessionID)
	if err != nil {
		return Keypair{}, nil, err
	}
	att := signAttestation(member, key.PublicHex(), time.Now().Add(attestationTTLMs*time.Millisecond).UnixMilli())
	return key, newPresenceRegistration(key, att), nil
}

// loadSessionName is the display name a session was given with `profile
// --name` ("" when none).
func loadSessionName(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// storeSessionName keeps a session's chosen display name beside its key.
func storeSessionName(path, name string) error {
	if err := ensurePrivateDir(filepath.Dir(path)); err != nil {
		return err
	}
	return writeFileAtomic(path, []byte(name+"\n"), 0o600)
}
