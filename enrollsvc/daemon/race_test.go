//go:build race

package daemon_test

// raceDetector: the tests run under the race detector (make test's second pass), where each
// operation costs several times as much; load tests scale down there, keeping their checks.
const raceDetector = true
