#!/bin/sh
# The example application: says hello and who it runs as.
if [ "$1" = "--check" ]; then
  exit 0
fi
echo "hello from kiln @VERSION@, running as $(id -un) on $(cat /etc/motd)"
