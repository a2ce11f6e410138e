# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command"]
RUN New-Item -ItemType Directory C:\app ; `
    Write-Host done
WORKDIR C:\app
COPY app.ps1 C:\app\
