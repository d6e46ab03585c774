{{/*
Names, labels and the authgate configuration file. Everything authgate-specific that more
than one template needs lives here.
*/}}

{{- define "authgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "authgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "authgate.labels" -}}
helm.sh/chart: {{ include "authgate.chart" . }}
{{ include "authgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "authgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "authgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Refuse values the schema cannot express, with a message that says what to do instead.
*/}}
{{- define "authgate.validate" -}}
{{- $cfg := .Values.config | default dict }}
{{- range $section, $keys := dict "secrets" (list "key_encryption_key" "previous_key_encryption_keys") "hmac" (list "challenge_secret" "previous_challenge_secrets") "bpc" (list "operator_token") }}
{{- $s := get $cfg $section | default dict }}
{{- range $keys }}
{{- if hasKey $s . }}
{{- fail (printf "config.%s.%s is a secret: it must not go in the ConfigMap (authgate refuses a group-readable config file holding secrets). Put it in a Kubernetes Secret and name it under secrets.* instead." $section .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if not .Values.app.image.repository }}
{{- fail "mode sidecar needs app.image.repository: the app container authgate sits in front of" }}
{{- end }}
{{- if eq (int .Values.app.port) (int .Values.port) }}
{{- fail (printf "app.port and port are both %d: in sidecar mode authgate listens on port and proxies to the app on 127.0.0.1:app.port" (int .Values.port)) }}
{{- end }}
{{- end }}
{{- $stores := get $cfg "stores" | default dict }}
{{- if and (eq (get $stores "backend" | default "memory") "redis") (not .Values.secrets.redisUrl.existingSecret) }}
{{- fail "config.stores.backend is redis but secrets.redisUrl.existingSecret is empty: the Redis URL may carry a password, so it comes from a Secret" }}
{{- end }}
{{- with .Values.redisTLS }}
{{- if and .existingSecret (ne (empty .certKey) (empty .keyKey)) }}
{{- fail "redisTLS.certKey and redisTLS.keyKey go together: mutual TLS needs the client certificate and its key" }}
{{- end }}
{{- if and .existingSecret (not (or .caKey .certKey)) }}
{{- fail "redisTLS.existingSecret is set but names no key: set caKey, or certKey and keyKey" }}
{{- end }}
{{- end }}
{{- /* authgate exits within shutdown delay + drain + 1 s of SIGTERM, which comes after the
       preStop hook: the grace period must cover all of it, or SIGKILL cuts the drain. */}}
{{- $server := get $cfg "server" | default dict }}
{{- $delay := 5.0 }}
{{- if hasKey $server "shutdown_delay_seconds" }}{{ $delay = float64 (get $server "shutdown_delay_seconds") }}{{ end }}
{{- $drain := 15.0 }}
{{- if hasKey $server "drain_timeout_seconds" }}{{ $drain = float64 (get $server "drain_timeout_seconds") }}{{ end }}
{{- $preStop := float64 (dig "preStop" "sleep" "seconds" 0 (.Values.lifecycle | default dict)) }}
{{- $needed := addf $preStop $delay $drain 1 }}
{{- $grace := float64 .Values.terminationGracePeriodSeconds }}
{{- if le $grace $needed }}
{{- fail (printf "terminationGracePeriodSeconds %v is too short: authgate needs more than %v s (preStop sleep %v + server.shutdown_delay_seconds %v + server.drain_timeout_seconds %v + 1) or Kubernetes kills it mid-drain" .Values.terminationGracePeriodSeconds $needed $preStop $delay $drain) }}
{{- end }}
{{- $appPreStop := float64 (dig "preStop" "sleep" "seconds" 0 (.Values.app.lifecycle | default dict)) }}
{{- if and (eq .Values.mode "sidecar") (le $grace $appPreStop) }}
{{- fail (printf "terminationGracePeriodSeconds %v is too short: the app's preStop sleep alone is %v s" .Values.terminationGracePeriodSeconds $appPreStop) }}
{{- end }}
{{- end }}

{{/*
The authgate configuration file: values.config with the keys the chart owns laid over it.
It never holds a secret; those arrive as AUTHGATE_* environment variables (see env).
*/}}
{{- define "authgate.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := dict "host" .Values.listenHost "port" (int .Values.port) }}
{{- $owned := dict "server" $server }}
{{- if .Values.signingKeys.existingSecret }}
{{- $files := list }}
{{- range .Values.signingKeys.files }}
{{- $files = append $files (printf "%s/%s" $.Values.signingKeys.mountPath .) }}
{{- end }}
{{- $_ := set $owned "jwt" (dict "signing_key_files" $files) }}
{{- end }}
{{- with .Values.redisTLS }}
{{- if .existingSecret }}
{{- $tls := dict }}
{{- if .caKey }}{{ $_ := set $tls "ca_file" (printf "%s/%s" .mountPath .caKey) }}{{ end }}
{{- if .certKey }}{{ $_ := set $tls "cert_file" (printf "%s/%s" .mountPath .certKey) }}{{ end }}
{{- if .keyKey }}{{ $_ := set $tls "key_file" (printf "%s/%s" .mountPath .keyKey) }}{{ end }}
{{- $_ := set $owned "stores" (dict "redis" (dict "tls" $tls)) }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- $_ := set $owned "proxy" (dict "upstream" (printf "http://127.0.0.1:%d" (int .Values.app.port))) }}
{{- end }}
{{- toYaml (mustMergeOverwrite $cfg $owned) }}
{{- end }}

{{/*
Secrets as AUTHGATE_<SECTION>__<KEY> variables, each read from a key of an existing Secret.
*/}}
{{- define "authgate.secretEnv" -}}
{{- $vars := list
  (list "AUTHGATE_STORES__REDIS__URL" .Values.secrets.redisUrl)
  (list "AUTHGATE_STORES__REDIS__PASSWORD" .Values.secrets.redisPassword)
  (list "AUTHGATE_STORES__REDIS__SENTINEL_PASSWORD" .Values.secrets.redisSentinelPassword)
  (list "AUTHGATE_SECRETS__KEY_ENCRYPTION_KEY" .Values.secrets.keyEncryptionKey)
  (list "AUTHGATE_SECRETS__PREVIOUS_KEY_ENCRYPTION_KEYS" .Values.secrets.previousKeyEncryptionKeys)
  (list "AUTHGATE_HMAC__CHALLENGE_SECRET" .Values.secrets.challengeSecret)
  (list "AUTHGATE_HMAC__PREVIOUS_CHALLENGE_SECRETS" .Values.secrets.previousChallengeSecrets)
  (list "AUTHGATE_BPC__OPERATOR_TOKEN" .Values.secrets.operatorToken) }}
{{- range $vars }}
{{- $ref := index . 1 }}
{{- if $ref.existingSecret }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end }}
