// Package soap reads and writes the SOAP 1.2 envelopes of the Windows enrollment web services
// (MS-XCEP policy, MS-WSTEP enrollment), as AD CS's CEP and CES roles speak them.
//
// Parse turns a request body into an Envelope: the WS-Addressing headers (Action, MessageID,
// To), the WS-Security UsernameToken if there is one, and the single child element of
// soap:Body, re-encoded so that it carries its own namespace declarations and can be decoded on
// its own by the xcep and wstep packages. Parse treats the body as hostile: it refuses
// documents over MaxBody bytes, DOCTYPE and every other <!...> directive (so no entity
// declarations, internal or external), processing instructions other than the XML declaration,
// nesting deeper than MaxDepth, more than MaxTokens tokens, SOAP 1.1 or other non-SOAP-1.2
// envelopes, a Body with no or several child elements, and a missing Action. Its errors say what
// was wrong and never repeat the contents of the wsse:Security header, so never the password.
//
// Reply and Fault build the answer envelopes: Action and RelatesTo (the request's MessageID),
// optionally a wsu:Timestamp as AD CS sends over its username/password endpoints, and the body
// or the SOAP 1.2 fault. This package does no I/O beyond reading the body it is given, and no
// authentication: checking the UsernameToken is the caller's job.
package soap
