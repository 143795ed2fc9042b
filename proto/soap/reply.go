package soap

import (
	"bytes"
	"encoding/xml"
	"time"
)

// FaultAction is the WS-Addressing Action of every SOAP fault.
const FaultAction = "http://www.w3.org/2005/08/addressing/soap/fault"

// TimestampLifetime is how long the reply Timestamp says the reply is valid, as AD CS does.
const TimestampLifetime = 5 * time.Minute

// Reply builds a SOAP 1.2 envelope with the WS-Addressing Action and RelatesTo (the request's
// MessageID; omitted when empty) headers and, when withTimestamp, a wsse:Security header holding
// a wsu:Timestamp (Created now, Expires now+5 min) as AD CS returns over its username/password
// endpoints. body is the raw XML of the response element; it must declare its own namespaces.
func Reply(action, relatesTo string, body []byte, now time.Time, withTimestamp bool) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>`)
	b.WriteString(`<s:Envelope xmlns:s="` + NS12 + `" xmlns:a="` + NSAddressing + `"`)
	if withTimestamp {
		b.WriteString(` xmlns:u="` + NSUtility + `"`)
	}
	b.WriteString(`><s:Header>`)
	writeAddressing(&b, action, relatesTo)
	if withTimestamp {
		const stamp = "2006-01-02T15:04:05.000Z"
		now = now.UTC()
		b.WriteString(`<o:Security s:mustUnderstand="1" xmlns:o="` + NSSecExt + `">`)
		b.WriteString(`<u:Timestamp u:Id="_0"><u:Created>` + now.Format(stamp) + `</u:Created>`)
		b.WriteString(`<u:Expires>` + now.Add(TimestampLifetime).Format(stamp) + `</u:Expires></u:Timestamp>`)
		b.WriteString(`</o:Security>`)
	}
	b.WriteString(`</s:Header><s:Body>`)
	b.Write(body)
	b.WriteString(`</s:Body></s:Envelope>`)
	return b.Bytes()
}

// Fault builds a SOAP 1.2 fault: Code Value s:Sender (the client's message is at fault) or
// s:Receiver (the server could not or would not do it), Reason text in en-US, and Detail with
// the raw XML detail (omitted when nil), with Action FaultAction and RelatesTo.
func Fault(sender bool, reason string, detail []byte, relatesTo string) []byte {
	return FaultWithSubcode(sender, xml.Name{}, reason, detail, relatesTo)
}

// FaultWithSubcode is Fault with a Code Subcode, a qualified name such as
// {http://www.w3.org/2005/08/addressing, ActionNotSupported} or
// {http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd,
// FailedAuthentication}. A zero subcode is left out.
func FaultWithSubcode(sender bool, subcode xml.Name, reason string, detail []byte, relatesTo string) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>`)
	b.WriteString(`<s:Envelope xmlns:s="` + NS12 + `" xmlns:a="` + NSAddressing + `"><s:Header>`)
	writeAddressing(&b, FaultAction, relatesTo)
	b.WriteString(`</s:Header><s:Body><s:Fault><s:Code><s:Value>`)
	if sender {
		b.WriteString(`s:Sender`)
	} else {
		b.WriteString(`s:Receiver`)
	}
	b.WriteString(`</s:Value>`)
	if subcode.Local != "" {
		b.WriteString(`<s:Subcode><s:Value`)
		switch subcode.Space {
		case "":
			b.WriteString(`>`)
		case NS12:
			b.WriteString(`>s:`)
		default:
			b.WriteString(` xmlns:sc="`)
			escape(&b, subcode.Space)
			b.WriteString(`">sc:`)
		}
		escape(&b, subcode.Local)
		b.WriteString(`</s:Value></s:Subcode>`)
	}
	b.WriteString(`</s:Code><s:Reason><s:Text xml:lang="en-US">`)
	escape(&b, reason)
	b.WriteString(`</s:Text></s:Reason>`)
	if detail != nil {
		b.WriteString(`<s:Detail>`)
		b.Write(detail)
		b.WriteString(`</s:Detail>`)
	}
	b.WriteString(`</s:Fault></s:Body></s:Envelope>`)
	return b.Bytes()
}

func writeAddressing(b *bytes.Buffer, action, relatesTo string) {
	b.WriteString(`<a:Action s:mustUnderstand="1">`)
	escape(b, action)
	b.WriteString(`</a:Action>`)
	if relatesTo != "" {
		b.WriteString(`<a:RelatesTo>`)
		escape(b, relatesTo)
		b.WriteString(`</a:RelatesTo>`)
	}
}

// escape writes s as XML text or attribute value. xml.EscapeText also escapes quotes and
// replaces characters XML cannot carry with U+FFFD.
func escape(b *bytes.Buffer, s string) {
	_ = xml.EscapeText(b, []byte(s)) // writing to a bytes.Buffer does not fail
}
