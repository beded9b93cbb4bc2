# syntax=docker/dockerfile:1
# Multi-stage build: a static, trimmed binary on a distroless base, run as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/notifybridge .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notifybridge /notifybridge
USER nonroot:nonroot
ENV BRIDGE_LISTEN=:8080 BRIDGE_ADMIN_LISTEN=:9090 BRIDGE_LOG_FORMAT=json
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/notifybridge", "healthcheck"]
ENTRYPOINT ["/notifybridge"]
CMD ["serve"]
