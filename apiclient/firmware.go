package apiclient

// FirmwarePath is the firmware endpoint: GET for FirmwareStatus, PUT a signed update bundle.
const FirmwarePath = "/api/v1/firmware"

// FirmwareStatus is GET /api/v1/firmware.
type FirmwareStatus struct {
	Running string         `json:"running"` // "factory" or the slot
	Active  string         `json:"active,omitempty"`
	Pending string         `json:"pending,omitempty"`
	Last    string         `json:"last,omitempty"`
	Slots   []FirmwareSlot `json:"slots"`
}

// FirmwareSlot is one slot.
type FirmwareSlot struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"` // "" when empty
	Kernel  string `json:"kernel,omitempty"`
}

// FirmwareInstalled is PUT /api/v1/firmware's answer.
type FirmwareInstalled struct {
	Version string `json:"version"`
	Slot    string `json:"slot"`
	Message string `json:"message"`
}
