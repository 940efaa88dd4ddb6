// The lifecycle core's vocabulary (statuses, results, agent states, file digests) is part of the wire
// messages, so everything that speaks them sees it.
@_exported import BuilddCore
