{{/* The release's object name: the release name, or "fedgw" inside it. */}}
{{- define "fedgw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fedgw.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fedgw.labels" -}}
{{ include "fedgw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fedgw.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "fedgw.fullname" .) -}}
{{- end -}}

{{/* A TOML basic string. */}}
{{- define "fedgw.toml" -}}
{{- . | toJson -}}
{{- end -}}

{{/* kubernetes.configMaps as a map: namespace -> [names]. */}}
{{- define "fedgw.configMapsByNamespace" -}}
{{- $by := dict -}}
{{- range .Values.kubernetes.configMaps -}}
{{- $names := get $by .namespace | default list -}}
{{- $_ := set $by .namespace (append $names .name) -}}
{{- end -}}
{{- toYaml $by -}}
{{- end -}}
