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

{{- define "authgate.opsServiceLabels" -}}
authgate/service: ops
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
{{- /* The schema refuses these too; the templates again, for installs that skip it
       (helm --skip-schema-validation). Secrets: the paths of authgate.secretVars. */}}
{{- range include "authgate.secretVars" . | fromYamlArray }}
{{- $path := splitList "__" (lower (trimPrefix "AUTHGATE_" .var)) }}
{{- $node := $cfg }}
{{- $seen := list }}
{{- range $path }}
{{- if kindIs "map" $node }}
{{- $seen = append $seen . }}
{{- if hasKey $node . }}
{{- if eq (len $seen) (len $path) }}
{{- fail (printf "config.%s is a secret: it must not go in the ConfigMap (authgate refuses a group-readable config file holding secrets). Put it in a Kubernetes Secret and name it under secrets.* instead." (join "." $seen)) }}
{{- end }}
{{- $node = get $node . }}
{{- else }}
{{- $node = "" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- $name := upper .name }}
{{- if hasPrefix "AUTHGATE_" $name }}
{{- $rest := trimPrefix "AUTHGATE_" $name }}
{{- /* Each secret variable, and the section that holds nothing but secrets. */}}
{{- range concat (include "authgate.secretVars" $ | fromYamlArray) (list (dict "var" "AUTHGATE_SECRETS" "value" "keyEncryptionKey")) }}
{{- $secret := trimPrefix "AUTHGATE_" .var }}
{{- if or (eq $rest $secret) (hasPrefix (printf "%s__" $rest) $secret) (hasPrefix (printf "%s__" $secret) $rest) }}
{{- fail (printf "extraEnv %s could carry a secret into authgate's config (the loader reads AUTHGATE_* names in any case, a whole section in one variable): name a Kubernetes Secret in secrets.%s instead" $name .value) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.envFrom }}
{{- if not .secretRef }}
{{- fail "envFrom of authgate takes Secrets only (secretRef): a ConfigMap's variables cannot be checked for secrets here" }}
{{- end }}
{{- end }}
{{- if eq (int .Values.opsPort) (int .Values.port) }}
{{- fail (printf "opsPort and port are both %d: the ops port is a listener of its own" (int .Values.port)) }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if not .Values.app.image.repository }}
{{- fail "mode sidecar needs app.image.repository: the app container authgate sits in front of" }}
{{- end }}
{{- if not (or .Values.app.image.tag .Values.app.image.digest) }}
{{- fail "mode sidecar needs app.image.tag or app.image.digest: the chart never pulls an implicit latest" }}
{{- end }}
{{- if eq (int .Values.app.port) (int .Values.port) }}
{{- fail (printf "app.port and port are both %d: in sidecar mode authgate listens on port and proxies to the app on 127.0.0.1:app.port" (int .Values.port)) }}
{{- end }}
{{- if eq (int .Values.app.port) (int .Values.opsPort) }}
{{- fail (printf "app.port and opsPort are both %d: authgate's ops listener needs its own port" (int .Values.opsPort)) }}
{{- end }}
{{- /* The kubelet probes the pod IP; the app listens on 127.0.0.1 only. */}}
{{- range $kind := list "livenessProbe" "readinessProbe" "startupProbe" }}
{{- $probe := get $.Values.app $kind | default dict }}
{{- range $handler := list "httpGet" "tcpSocket" "grpc" }}
{{- $target := get $probe $handler | default dict }}
{{- if and $target (eq (toString (get $target "port")) (toString $.Values.app.port)) }}
{{- fail (printf "app.%s.%s.port is app.port (%d), where the app listens on 127.0.0.1 only while the kubelet probes the pod IP: the pod would never become Ready. Probe the app through authgate (port %d, a path a policy rule lets in anonymously) or with an exec probe" $kind $handler (int $.Values.app.port) (int $.Values.port)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.autoscaling }}
{{- if .enabled }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- if not (or .targetCPUUtilizationPercentage .targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (hasKey .Values.podDisruptionBudget "minAvailable") (hasKey .Values.podDisruptionBudget "maxUnavailable") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
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
{{- $server := dict "host" .Values.listenHost "port" (int .Values.port) "ops_host" .Values.listenHost "ops_port" (int .Values.opsPort) }}
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
Every secret key of authgate's config: its AUTHGATE_* variable and the secrets.* value that
names its Secret (tests/deploy/test_helm_values.py checks this list against the model).
*/}}
{{- define "authgate.secretVars" -}}
- {var: AUTHGATE_STORES__REDIS__URL, value: redisUrl}
- {var: AUTHGATE_STORES__REDIS__PASSWORD, value: redisPassword}
- {var: AUTHGATE_STORES__REDIS__SENTINEL_PASSWORD, value: redisSentinelPassword}
- {var: AUTHGATE_SECRETS__KEY_ENCRYPTION_KEY, value: keyEncryptionKey}
- {var: AUTHGATE_SECRETS__PREVIOUS_KEY_ENCRYPTION_KEYS, value: previousKeyEncryptionKeys}
- {var: AUTHGATE_HMAC__CHALLENGE_SECRET, value: challengeSecret}
- {var: AUTHGATE_HMAC__PREVIOUS_CHALLENGE_SECRETS, value: previousChallengeSecrets}
- {var: AUTHGATE_BPC__OPERATOR_TOKEN, value: operatorToken}
- {var: AUTHGATE_TOKENS__PICO_FLEET_SECRET, value: picoFleetSecret}
- {var: AUTHGATE_JWT__DPOP__NONCE_SECRET, value: dpopNonceSecret}
{{- end }}

{{/*
Secrets as AUTHGATE_<SECTION>__<KEY> variables, each read from a key of an existing Secret.
*/}}
{{- define "authgate.secretEnv" -}}
{{- range include "authgate.secretVars" . | fromYamlArray }}
{{- $ref := get $.Values.secrets .value }}
{{- if $ref.existingSecret }}
- name: {{ .var }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Secrets the pod reads: secrets.*, signingKeys, redisTLS and envFrom's secretRefs.
*/}}
{{- define "authgate.secretNames" -}}
{{- $names := list }}
{{- range include "authgate.secretVars" . | fromYamlArray }}
{{- with (get $.Values.secrets .value).existingSecret }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- with .Values.signingKeys.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.redisTLS.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- range .Values.envFrom }}{{ $names = append $names .secretRef.name }}{{ end }}
{{- toYaml ($names | uniq | sortAlpha) }}
{{- end }}

{{/*
checksum/secrets: each Secret the pod reads, by name, uid and resourceVersion (looked up at
install and upgrade; `helm template` looks up nothing). A Secret changed before `helm
upgrade` rolls the pods. The Secrets' data never enters the hash: an annotation is readable
by anyone who can read the Deployment, and a low-entropy password's hash could be guessed.
*/}}
{{- define "authgate.secretsChecksum" -}}
{{- $seen := list }}
{{- range include "authgate.secretNames" . | fromYamlArray }}
{{- $found := lookup "v1" "Secret" $.Release.Namespace . }}
{{- $seen = append $seen (list . (dig "metadata" "uid" "" $found) (dig "metadata" "resourceVersion" "" $found)) }}
{{- end }}
{{- toJson $seen | sha256sum }}
{{- end }}

{{/*
topologySpreadConstraints, each without a labelSelector given this release's pods.
*/}}
{{- define "authgate.topologySpreadConstraints" -}}
{{- $out := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "authgate.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- toYaml $out }}
{{- end }}
