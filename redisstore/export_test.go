package redisstore

// CheckSource is the verification script, for the benchmark's ceiling run.
const CheckSource = checkSource

// MarkerKey is the key of the loss marker of subject's bucket under prefix.
func MarkerKey(prefix, subject string) string {
	return (&Store{prefix: prefix}).tag(bucket(subject)) + ":e"
}
