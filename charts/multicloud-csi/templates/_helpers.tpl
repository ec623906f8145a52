{{- define "mcfs.driverName" -}}csi.multicloud.fs{{- end -}}

{{- define "mcfs.labels" -}}
app.kubernetes.io/name: multicloud-csi
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mcfs.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{- define "mcfs.redisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://multicloud-redis.{{ .Values.namespace }}.svc.cluster.local:6379
{{- else -}}
{{- required "redis.existingUrl is required when redis.enabled is false" .Values.redis.existingUrl -}}
{{- end -}}
{{- end -}}

{{- define "mcfs.secretName" -}}
{{- default "multicloud-cluster-secret" .Values.clusterSecret.existingSecret -}}
{{- end -}}
