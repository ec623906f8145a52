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

{{- /* The bundled Redis's URL names only the ACL user: the password reaches mcfs as a file. */ -}}
{{- define "mcfs.redisUrl" -}}
{{- if and .Values.redis.enabled .Values.redis.sentinel.enabled -}}
{{- $s := .Values.redis.sentinel -}}
{{ if .Values.tls.enabled }}rediss{{ else }}redis{{ end }}+sentinel://{{ .Values.redis.auth.username }}@{{ include "mcfs.sentinelHosts" . }}/{{ $s.masterName }}{{ if $s.waitReplicas }}?wait_replicas={{ $s.waitReplicas }}{{ end }}
{{- else if .Values.redis.enabled -}}
{{ if .Values.tls.enabled }}rediss{{ else }}redis{{ end }}://{{ .Values.redis.auth.username }}@multicloud-redis.{{ .Values.namespace }}.svc.cluster.local:6379
{{- else -}}
{{- required "redis.existingUrl is required when redis.enabled is false" .Values.redis.existingUrl -}}
{{- end -}}
{{- end -}}

{{- /* DNS name of Redis pod i of the sentinel StatefulSet. */ -}}
{{- define "mcfs.redisPodHost" -}}
multicloud-redis-{{ .i }}.multicloud-redis-headless.{{ .ns }}.svc.cluster.local
{{- end -}}

{{- /* Every sentinel, host:port, comma-separated: the client listens to each (only a failover's leader announces it). */ -}}
{{- define "mcfs.sentinelHosts" -}}
{{- $ns := .Values.namespace -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.redis.sentinel.replicas) -}}
{{- $hosts = append $hosts (printf "%s:26379" (include "mcfs.redisPodHost" (dict "i" $i "ns" $ns))) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{- define "mcfs.secretName" -}}
{{- default "multicloud-cluster-secret" .Values.clusterSecret.existingSecret -}}
{{- end -}}

{{- /* Secret with the Redis password ("" when mcfs gets no password file). */ -}}
{{- define "mcfs.redisAuthSecret" -}}
{{- if .Values.redis.auth.existingSecret -}}
{{ .Values.redis.auth.existingSecret }}
{{- else if .Values.redis.enabled -}}
multicloud-redis-auth
{{- end -}}
{{- end -}}

{{- /* Its key: the generated Secret's is "password". */ -}}
{{- define "mcfs.redisAuthKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretKey }}{{ else }}password{{ end -}}
{{- end -}}

{{- /* Secret with the ca.crt mcfs verifies Redis's certificate with ("" for none). */ -}}
{{- define "mcfs.redisCaSecret" -}}
{{- if .Values.redis.enabled -}}
{{- if .Values.tls.enabled }}{{ include "mcfs.redisTlsSecret" . }}{{ end -}}
{{- else -}}
{{ .Values.redis.existingCaSecret }}
{{- end -}}
{{- end -}}

{{- define "mcfs.nodeTlsSecret" -}}
{{- default "multicloud-node-tls" .Values.tls.existingSecret -}}
{{- end -}}

{{- define "mcfs.redisTlsSecret" -}}
{{- default "multicloud-redis-tls" .Values.tls.redisExistingSecret -}}
{{- end -}}

{{- /* Flags of every mcfs role that talks to Redis: the password and CA as files under /etc/mcfs. */ -}}
{{- define "mcfs.redisFlags" -}}
{{- if include "mcfs.redisAuthSecret" . }}
- --redis-password-file=/etc/mcfs/redis-password
{{- end }}
{{- if include "mcfs.redisCaSecret" . }}
- --redis-ca=/etc/mcfs/redis-ca.crt
{{- end }}
{{- end -}}

{{- /* Projected-volume sources of the Redis password and CA (files redis-password, redis-ca.crt). */ -}}
{{- define "mcfs.redisSources" -}}
{{- with include "mcfs.redisAuthSecret" . }}
- secret:
    name: {{ . }}
    items:
      - key: {{ include "mcfs.redisAuthKey" $ }}
        path: redis-password
{{- end }}
{{- with include "mcfs.redisCaSecret" . }}
- secret:
    name: {{ . }}
    items:
      - key: ca.crt
        path: redis-ca.crt
{{- end }}
{{- end -}}

{{- /* Labels of the driver's pods that may reach Redis: the node DaemonSet and the controller. */ -}}
{{- define "mcfs.redisClients" -}}
- podSelector:
    matchExpressions:
      - {key: app.kubernetes.io/name, operator: In, values: [multicloud-csi]}
      - {key: app.kubernetes.io/component, operator: In, values: [node, controller]}
{{- end -}}

{{- /* DNS names of the bundled Redis's Service (its certificate's subject alternative names). */ -}}
{{- define "mcfs.redisDnsNames" -}}
- multicloud-redis
- multicloud-redis.{{ .Values.namespace }}
- multicloud-redis.{{ .Values.namespace }}.svc
- multicloud-redis.{{ .Values.namespace }}.svc.cluster.local
{{- if .Values.redis.sentinel.enabled }}
- "*.multicloud-redis-headless.{{ .Values.namespace }}.svc.cluster.local"
{{- end }}
{{- end -}}

{{- /* Probe of the bundled Redis: an authenticated PING as the mcfs user (over TLS when on). */ -}}
{{- define "mcfs.redisPing" -}}
{{ include "mcfs.readRedisPassword" . }}; REDISCLI_AUTH="$pw" redis-cli --no-auth-warning --user "$REDIS_USER" -h 127.0.0.1 -p 6379
{{- if .Values.tls.enabled }} --tls --cacert /run/redis/ca.crt{{ end }} ping | grep -qx PONG
{{- end -}}

{{- /* sh: the Redis password into $pw, without leading and trailing whitespace (mcfs trims its files so). */ -}}
{{- define "mcfs.readRedisPassword" -}}
pw="$(cat /etc/redis-auth/password)"; pw="${pw#"${pw%%[![:space:]]*}"}"; pw="${pw%"${pw##*[![:space:]]}"}"
{{- end -}}
