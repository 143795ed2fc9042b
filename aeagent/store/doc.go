// Package store is aeagent's certificate store on disk: the certificates it holds, with their
// chains and private keys, the ones they replaced, the requests waiting for a CA manager's
// approval, and a few small state files. It is laid out so that an admin can read it with ls
// and openssl:
//
//	DIR/                       mode 0700, made by Open (parents 0755)
//	  .lock                    flock(2)ed exclusively by the open Store
//	  <template>/cert.pem      the current certificate of a template (PEM "CERTIFICATE")
//	  <template>/chain.pem     the issuing CA and up (PEM certificates; may be empty or missing)
//	  <template>/key.pem       its private key, PKCS#8 PEM "PRIVATE KEY", mode 0600
//	  archive/<template>/<serial-hex>-<20060102T150405Z>/{cert.pem,chain.pem,key.pem}
//	                           replaced and archived certificates; the time (UTC) is when they
//	                           were archived, "-2", "-3"... follow if that name is taken
//	  pending/<template>/request.json   a request waiting for approval (PendingRequest)
//	  pending/<template>/key.pem        the request's private key, mode 0600
//	  <name>.json              state of the agent (ReadJSON, WriteJSON)
//
// A template name becomes a directory name: bytes outside [A-Za-z0-9._-], a leading '.', the
// first byte of the reserved names "archive" and "pending", and the '.' of a ".json" suffix (so
// that template directories and state files never share a name) are written %XX in upper-case
// hex: "My Template" is "My%20Template", "archive" is "%61rchive". Only the canonical encoding of a
// non-empty, valid UTF-8 name is read back; other entries of DIR, archive/ and pending/, symbolic
// links and stray files are ignored, except that Open removes the .staging-* entries a crash
// left.
//
// Reading is strict: a file that cannot be read as what it should be (a garbled certificate, a
// key that is not PKCS#8, PKCS#1 or SEC 1 PEM, a key that does not belong to its certificate, a
// key.pem that group or other may access, a template directory with files but no cert.pem) makes
// the whole call fail with an error that wraps ErrCorrupt and names the file: the agent then
// refuses to act instead of enrolling over something an admin should look at. A missing key.pem
// is not an error: the certificate is then held without its key (Cert.Key is nil). Reading never
// changes anything on disk.
//
// Every change is atomic and durable: new files are written into a DIR/.staging-* directory
// (keys with O_EXCL and mode 0600), synced, and renamed into place, and the directories that
// changed are synced. Install moves the certificate it replaces to archive/ before renaming the
// new one in, so a crash in between loses at most the new certificate, which the agent then
// requests again; no key is ever lost that way. Remove and DropPending rename the directory away
// before deleting it, so a crash never leaves half of one behind. Deleting a key file does not
// erase it: no filesystem promises that, and journaling and flash storage keep old blocks.
//
// One Store at a time: Open takes an exclusive, non-blocking flock on DIR/.lock and fails with
// ErrLocked while another Store (in this process or another) has it; Close releases it. The
// methods of a Store are safe for concurrent use. Errors never contain key material.
package store
