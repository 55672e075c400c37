package redisstore

// IndexKey is the key of subject's family index under prefix.
func IndexKey(prefix, subject string) string {
	s := &Store{prefix: prefix}
	return s.indexKey(s.tag(bucket(subject)), subject)
}
