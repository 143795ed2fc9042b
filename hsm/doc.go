// Package hsm is the appliance's PKCS#11 key store: the only code that talks to the
// hardware security module and the only package built with cgo.
//
// CA keys are generated inside a token (sensitive, never extractable) and leave this
// package only as crypto.Signer values (*Key). A KeyStore opens one token of one
// PKCS#11 module through crypto11, selected by label or serial (never by slot
// number, which SoftHSM renumbers), keeps a pool of sessions for parallel signing,
// puts a deadline around every signature, and recovers by itself when the token's
// sessions die: it opens a fresh crypto11 context, swaps it in and retries the
// failed operation once. Keys are addressed by RFC 7512 PKCS#11 URIs (see URI).
//
// PINs are never logged and never appear in an error.
//
// Builds without cgo keep the same API, but Open and InitToken fail with an error
// wrapping ErrNoCgo.
package hsm
