#!/bin/sh
echo "hello from $(cat /etc/debian_version)"
