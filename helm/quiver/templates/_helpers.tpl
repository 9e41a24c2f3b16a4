{{/* Names ------------------------------------------------------------------------------------- */}}

{{- define "quiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name, cut to 52 characters so that the suffixes below ("-coordinator",
"-workers", ...) keep every object name within 63.
*/}}
{{- define "quiver.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "quiver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quiver.coordinatorName" -}}
{{- printf "%s-coordinator" (include "quiver.fullname" .) }}
{{- end }}

{{- define "quiver.workerName" -}}
{{- printf "%s-worker" (include "quiver.fullname" .) }}
{{- end }}

{{/* The workers' headless Service: every A record of it is one ready worker. */}}
{{- define "quiver.workersServiceName" -}}
{{- printf "%s-workers" (include "quiver.fullname" .) }}
{{- end }}

{{- define "quiver.workersServiceHost" -}}
{{- printf "%s.%s.svc.%s" (include "quiver.workersServiceName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "quiver.configName" -}}
{{- printf "%s-config" (include "quiver.fullname" .) }}
{{- end }}

{{- define "quiver.clusterSecretName" -}}
{{- if .Values.cluster.existingSecret }}
{{- .Values.cluster.existingSecret }}
{{- else }}
{{- printf "%s-cluster" (include "quiver.fullname" .) }}
{{- end }}
{{- end }}

{{- define "quiver.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- printf "%s-secrets" (include "quiver.fullname" .) }}
{{- end }}
{{- end }}

{{/* Labels ------------------------------------------------------------------------------------ */}}

{{- define "quiver.labels" -}}
helm.sh/chart: {{ include "quiver.chart" . }}
{{ include "quiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quiver
{{- end }}

{{- define "quiver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Call with (dict "root" $ "component" "coordinator"). */}}
{{- define "quiver.componentSelectorLabels" -}}
{{ include "quiver.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quiver.componentLabels" -}}
{{ include "quiver.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quiver.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* quiver.toml ------------------------------------------------------------------------------- */}}

{{/*
One TOML value. Helm reads every YAML number as a float, so whole numbers are written as integers
(pool_size = 8, not 8.0; a TOML integer also fits a float setting). Tables become inline tables
and lists become arrays; null values are left out by the caller.
*/}}
{{- define "quiver.tomlValue" -}}
{{- $v := . -}}
{{- $kind := kindOf $v -}}
{{- if eq $kind "string" -}}
{{- toJson $v -}}
{{- else if eq $kind "bool" -}}
{{- $v -}}
{{- else if or (eq $kind "float64") (eq $kind "float32") -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (hasPrefix "int" $kind) (hasPrefix "uint" $kind) -}}
{{- $v -}}
{{- else if eq $kind "slice" -}}
[{{- range $i, $e := $v -}}{{- if $i }}, {{ end -}}{{- include "quiver.tomlValue" $e -}}{{- end -}}]
{{- else if eq $kind "map" -}}
{{- $parts := list -}}
{{- range $key, $val := $v -}}
{{- if not (kindIs "invalid" $val) -}}
{{- $parts = append $parts (printf "%s = %s" (include "quiver.tomlKey" $key) (include "quiver.tomlValue" $val)) -}}
{{- end -}}
{{- end -}}
{{- if $parts -}}{ {{ join ", " $parts }} }{{- else -}}{}{{- end -}}
{{- else -}}
{{- fail (printf "quiver: cannot write the %s value %v to quiver.toml" $kind $v) -}}
{{- end -}}
{{- end }}

{{- define "quiver.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end }}

{{/* The key = value lines of one table (a map), null values left out. */}}
{{- define "quiver.tomlLines" -}}
{{- range $key, $val := . }}
{{- if not (kindIs "invalid" $val) }}
{{ include "quiver.tomlKey" $key }} = {{ include "quiver.tomlValue" $val }}
{{- end }}
{{- end }}
{{- end }}

{{/* The whole quiver.toml of the coordinator and the workers. */}}
{{- define "quiver.configToml" -}}
{{- $server := .Values.config.server | default dict -}}
{{- $workers := .Values.config.workers | default dict -}}
{{- range $reserved := list "listen" "metrics_listen" "http_listen" "postgres_listen" "keda_listen" }}
{{- if hasKey $server $reserved }}
{{- fail (printf "quiver: config.server.%s is set by the chart (coordinator.port, metrics.port, postgres.port, worker.autoscaling.keda.port)" $reserved) }}
{{- end }}
{{- end }}
{{- range $reserved := list "mode" "service" "port" "addresses" "count" }}
{{- if hasKey $workers $reserved }}
{{- fail (printf "quiver: config.workers.%s is set by the chart (workers run in dns mode behind the headless Service)" $reserved) }}
{{- end }}
{{- end -}}
# quiver.toml, rendered by the Helm chart from its values (config.*). Do not edit in the cluster.

[server]
listen = {{ printf "0.0.0.0:%d" (int .Values.coordinator.port) | quote }}
{{- if .Values.metrics.enabled }}
http_listen = {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
{{- end }}
{{- if .Values.postgres.enabled }}
postgres_listen = {{ printf "0.0.0.0:%d" (int .Values.postgres.port) | quote }}
{{- end }}
{{- $keda := and .Values.worker.autoscaling.enabled .Values.worker.autoscaling.keda.enabled }}
{{- if $keda }}
keda_listen = {{ printf "0.0.0.0:%d" (int .Values.worker.autoscaling.keda.port) | quote }}
{{- end }}
{{- if not (hasKey $server "data_dir") }}
data_dir = "/var/lib/quiver"
{{- end }}
{{- include "quiver.tomlLines" $server }}

[workers]
mode = "dns"
# Headless Service: every A record is a ready worker pod.
service = {{ include "quiver.workersServiceHost" . | quote }}
port = {{ int .Values.worker.port }}
{{- if and $keda (not (hasKey $workers "min")) }}
# KEDA sizes the workers; at zero a query waits for one.
min = {{ int .Values.worker.autoscaling.minReplicas }}
max = {{ int .Values.worker.autoscaling.maxReplicas }}
{{- end }}
{{- include "quiver.tomlLines" $workers }}
{{- range $i, $source := .Values.config.sources }}
{{- if not (kindIs "map" $source) }}
{{- fail (printf "quiver: config.sources[%d] must be a map of source settings" $i) }}
{{- end }}
{{- if not $source.name }}
{{- fail (printf "quiver: config.sources[%d] has no name" $i) }}
{{- end }}
{{- if not $source.kind }}
{{- fail (printf "quiver: config.sources[%d] (%s) has no kind" $i $source.name) }}
{{- end }}

[[source]]
{{- include "quiver.tomlLines" $source }}
{{- end }}
{{ end }}

{{/*
Every ${NAME} in quiver.toml must be an environment variable of both the coordinator and the
workers (both load the whole file), or Quiver refuses to start. With the chart's own Secret, check that here; an existingSecret cannot be seen at render time.
*/}}
{{- define "quiver.checkEnvReferences" -}}
{{- if not .Values.existingSecret }}
{{- $secrets := keys (.Values.secrets | default dict) }}
{{- $coordinatorEnv := list }}
{{- range $e := .Values.coordinator.extraEnv | default list }}
{{- $coordinatorEnv = append $coordinatorEnv $e.name }}
{{- end }}
{{- $workerEnv := list }}
{{- range $e := .Values.worker.extraEnv | default list }}
{{- $workerEnv = append $workerEnv $e.name }}
{{- end }}
{{- range $ref := regexFindAll "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" (include "quiver.configToml" .) -1 }}
{{- $name := trimSuffix "}" (trimPrefix "${" $ref) }}
{{- if not (or (has $name $secrets) (and (has $name $coordinatorEnv) (has $name $workerEnv))) }}
{{- fail (printf "quiver: quiver.toml references %s: put %s in secrets, or in both coordinator.extraEnv and worker.extraEnv (both load the whole file)" $ref $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pieces shared by both Deployments ------------------------------------------------------------ */}}

{{/* Call with (dict "root" $ "port" <int> "probe" <values of one probe>). */}}
{{- define "quiver.healthProbe" -}}
exec:
  command: ["/quiver", "health", "--addr", {{ printf "127.0.0.1:%d" (int .port) | quote }}]
{{- with .probe }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{- define "quiver.podAnnotations" -}}
checksum/config: {{ include "quiver.configToml" . | sha256sum }}
{{- if and .Values.secrets (not .Values.existingSecret) }}
checksum/secrets: {{ toJson .Values.secrets | sha256sum }}
{{- end }}
{{- end }}
