package redisstore

// CheckSource is the verification script, for the benchmark's ceiling run.
const CheckSource = checkSource
