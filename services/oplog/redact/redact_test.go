package redact_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/platforma/platforma/services/oplog/redact"
)

func TestSensitiveKeys(t *testing.T) {
	keys := redact.Default()
	for key, want := range map[string]bool{
		"password": true, "Password": true, "PASSWORD": true, "newPassword": true, "user_password": true,
		"apiKey": true, "API_KEY": true, "api-key": true, "Api Key": true, "x.api.key": true,
		"token": true, "accessToken": true, "refresh_token": true, "X-Auth-Token": true, "id_token": true,
		"client_secret": true, "Authorization": true, "Cookie": true, "Set-Cookie": true,
		"sessionId": true, "SESSION_ID": true, "session-id": true,
		"otp": true, "oneTimeCode": true, "one_time_password": true, "verificationCode": true, "mfa_code": true,
		"pwd": true, "privateKey": true, "credentials": true,
		// Ordinary keys stay readable.
		"authType": false, "sessionRefreshed": false, "tokenCount2": false, "shopId": false,
		"errorCode": false, "passwordPolicy": false, "username": false, "": false, "cwd": false,
	} {
		assert.Equal(t, want, keys.Sensitive(key), key)
	}
}

func TestConfiguredWords(t *testing.T) {
	keys := redact.New([]string{"Shop-Secret-Hint", "", "  "})
	assert.True(t, keys.Sensitive("shop_secret_hint"))
	assert.True(t, keys.Sensitive("myShopSecretHint"))
	assert.False(t, keys.Sensitive("password"), "a configured list replaces the defaults")
	assert.False(t, redact.Keys{}.Sensitive("password"), "the zero value redacts nothing")
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"apikey": "apikey", "apiKey": "apikey", "API_KEY": "apikey", "api-key": "apikey", "Api Key": "apikey",
		"Ünïcode_Key": "ünïcodekey", "a.b-c_d e": "abcde",
	} {
		assert.Equal(t, want, redact.Normalize(in), in)
	}
}
