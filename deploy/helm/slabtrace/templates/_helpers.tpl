{{/* Named templates. */}}

{{/* The objects' name: the release's, unless overridden. */}}
{{- define "slabtrace.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the daemon's pods. */}}
{{- define "slabtrace.selectorLabels" -}}
app.kubernetes.io/name: slabtrace
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: daemon
{{- end -}}

{{/* Every object's labels. */}}
{{- define "slabtrace.labels" -}}
{{ include "slabtrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The image reference: the tag defaults to the chart's appVersion. */}}
{{- define "slabtrace.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
